"""Moved to ``converter.smoothquant.search``; this path keeps old imports working."""
from ..smoothquant.search import *  # noqa: F401,F403
from ..smoothquant.search import __all__  # noqa: F401
