"""The commands, one module per part of the pipeline; each parses and calls one library function."""
