"""Stage: command line. ``app`` is the Typer app; ``commands`` parse arguments and call one
library function each (lazy imports: ``medseg --help`` loads no torch).
"""
