"""Experiment configuration: YAML -> dot-path overrides -> validated, frozen pydantic models.

Flow: ``yaml.safe_load(file)`` -> relative data paths resolved against the YAML file's folder ->
``--set a.b=value`` overrides (values parsed as YAML scalars; paths relative to the working
directory) -> :class:`ExperimentConfig` validation. Unknown keys are rejected and the message
lists the valid ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ValidationError

from medseg.config.schema import ExperimentConfig
from medseg.errors import MedsegError, yaml_syntax_error
from medseg.io.paths import expand


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``a.b.c=value`` override to a nested dict in place (value parsed as YAML).

    Raises:
        MedsegError: when the assignment has no ``=``.
    """
    if "=" not in assignment:
        raise MedsegError(f"--set {assignment!r}: expected KEY=VALUE, e.g. --set train.epochs=2")
    key, value = assignment.split("=", 1)
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise MedsegError(f"--set {assignment!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(value) if value.strip() else None


def _model_for(path: tuple[Any, ...]) -> Optional[type[BaseModel]]:
    model: Any = ExperimentConfig
    for part in path:
        field = model.model_fields.get(str(part)) if isinstance(model, type) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return model


def format_validation_error(err: ValidationError, source: str) -> str:
    """Turn a pydantic error into one line per problem naming the key and the valid choices."""
    lines = []
    for item in err.errors():
        loc = tuple(item["loc"])
        key = ".".join(str(p) for p in loc)
        if item["type"] == "extra_forbidden":
            parent = _model_for(loc[:-1])
            valid = ", ".join(parent.model_fields) if parent else "?"
            section = ".".join(str(p) for p in loc[:-1]) or "top level"
            lines.append(f"{source}: unknown key '{key}' (valid keys in {section}: {valid})")
        else:
            lines.append(f"{source}: {key}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def load_config(path: Path | str, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read, override and validate an experiment config.

    Args:
        path: YAML file. ``data.dataset`` in it is resolved against the file's folder.
        overrides: ``key=value`` strings; paths in them resolve against the working directory.

    Raises:
        MedsegError: missing/unreadable file, bad YAML, unknown key or bad value.
    """
    path = Path(path)
    if not path.is_file():
        raise MedsegError(f"{path}: config file not found; pass the path of a YAML file such as configs/demo.yaml")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        raise yaml_syntax_error(path, exc) from None
    if not isinstance(raw, dict):
        raise MedsegError(f"{path}: expected a mapping of sections (data:, train:, ...) at the top level")
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    for key in ("dataset", "plan", "cache_dir"):
        value = data.get(key)
        if isinstance(value, str):
            value = expand(value)
            data[key] = value if Path(value).is_absolute() else str((path.parent / value).resolve())
    for assignment in overrides:
        apply_override(raw, assignment)
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise MedsegError(format_validation_error(err, str(path))) from None


def flatten(cfg: BaseModel | dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten a config into ``{"section.key": "value"}`` strings (for MLflow params)."""
    data = cfg.model_dump(mode="json") if isinstance(cfg, BaseModel) else cfg
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = str(value)
    return out
