"""Moved to ``converter.smoothquant.smoothing``; this path keeps old imports working."""
from ..smoothquant.smoothing import *  # noqa: F401,F403
from ..smoothquant.smoothing import __all__  # noqa: F401
