"""`python -m converter.cli` runs the `qdq` command line."""
from . import main

main(prog_name="qdq")
