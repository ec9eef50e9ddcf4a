"""Stage: configuration. Pydantic models of the whole experiment (``schema``), YAML + ``--set``
overrides (``load``), the reference page docs/reference/config.md generated from them (``reference``).
"""
