"""Stage: configuration. Pydantic models of the whole experiment (``schema``), YAML + ``--set``
overrides (``load``), the README reference generated from them (``reference``).
"""
