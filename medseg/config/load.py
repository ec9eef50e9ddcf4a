"""Experiment configuration: YAML -> dot-path overrides -> validated, frozen pydantic models.

Flow: YAML file (YAML 1.2's booleans and integers: ``off`` is a word, ``0012`` is text) -> relative
data paths resolved against the YAML file's folder -> ``--set a.b=value`` overrides (values parsed
as YAML scalars; paths relative to the working directory) -> :class:`ExperimentConfig`
validation. Unknown keys are rejected and the message lists the valid ones.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from medseg.config.schema import ExperimentConfig
from medseg.errors import MedsegError, clip, shorten, yaml_syntax_error
from medseg.io.paths import expand

MAX_CONFIG_BYTES = 1_000_000  # configs are a few kB; a larger file is not a config (and is not read whole)
MAX_PROBLEM_LINES = 20  # lines of a validation error shown; the rest are counted
# keys of earlier medseg versions -> where they live now (one key per setting)
MOVED_KEYS = {
    ("sampling", "flip_prob"): ("augment", "mirror_prob"),
    ("sampling", "intensity_prob"): ("augment", "intensity_prob"),
}


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's booleans and integers. YAML 1.1, PyYAML's default, reads
    on/off/yes/no as booleans (``amp: off`` arrived as False and failed a choice of words), a number
    with a leading zero as octal (case id ``0012`` became 10), ``1_000`` and ``12:30`` as numbers.
    Here only true/false are booleans (boolean keys still take yes/no/on/off, which pydantic reads)
    and a number that is not written as its value (leading zeros, ``_``, ``:``) stays text. Every
    scalar this loader reads as a number or boolean, YAML 1.1 does too, so what ``yaml.safe_dump``
    writes (a run's config.yaml) reads back the same; ``1e-3`` stays text, as in YAML 1.1, and
    pydantic reads it into a float key."""


_IMPLICIT = {  # the YAML 1.1 forms that are also YAML 1.2 core: no octal, sexagesimal, _ or yes/no/on/off
    "tag:yaml.org,2002:bool": (r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    "tag:yaml.org,2002:int": (r"^(?:[-+]?(?:0|[1-9][0-9]*)|0x[0-9a-fA-F]+)$", "-+0123456789"),
    "tag:yaml.org,2002:float": (
        r"^(?:[-+]?(?:\.[0-9]+|(?:0|[1-9][0-9]*)\.[0-9]*)(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)"
        r"|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
}
ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _IMPLICIT]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _tag, (_regexp, _first) in _IMPLICIT.items():
    ConfigLoader.add_implicit_resolver(_tag, re.compile(_regexp), list(_first))


def parse_yaml(text: str) -> Any:
    """A YAML document or scalar as configs and case lists read it (:class:`ConfigLoader`)."""
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - a SafeLoader subclass


def migrate(raw: dict[str, Any]) -> list[str]:
    """Move the keys of earlier medseg versions (:data:`MOVED_KEYS`) to where they live now, in
    place; a value already set at the new place wins. Configs and checkpoints of earlier runs load.
    ``sampling.flip_prob`` and ``sampling.intensity_prob`` only ever acted with the ``light``
    augmentation preset (the default): with another preset they are dropped, as they were ignored.

    Returns:
        ``old -> new`` for each key moved.
    """
    moved = []
    for (section, key), (new_section, new_key) in MOVED_KEYS.items():
        old = raw.get(section)
        if isinstance(old, dict) and key in old:
            value = old.pop(key)
            target = raw.setdefault(new_section, {})
            if isinstance(target, dict) and target.get(new_key) is None and target.get("preset", "light") == "light":
                target[new_key] = value
            moved.append(f"{section}.{key} -> {new_section}.{new_key}")
    return moved


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``a.b.c=value`` override to a nested dict in place (value parsed as YAML).

    Raises:
        MedsegError: when the assignment has no ``=``.
    """
    if "=" not in assignment:
        raise MedsegError(f"--set {clip(assignment)}: expected KEY=VALUE, e.g. --set train.epochs=2")
    key, value = assignment.split("=", 1)
    node = raw
    parts = key.strip().split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise MedsegError(
                f"--set {clip(assignment)}: {clip(part)} is a value, not a section; "
                f"set the value itself: --set {shorten('.'.join(parts[: i + 1]), 120)}=VALUE"
            )
        node = child
    node[parts[-1]] = parse_yaml(value) if value.strip() else None


def _model_for(path: tuple[Any, ...]) -> type[BaseModel] | None:
    model: Any = ExperimentConfig
    for part in path:
        field = model.model_fields.get(str(part)) if isinstance(model, type) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return model


def format_validation_error(err: ValidationError, source: str) -> str:
    """Turn a pydantic error into one line per problem naming the key and the valid choices (at
    most :data:`MAX_PROBLEM_LINES` lines). What the user wrote is echoed through
    :func:`medseg.errors.clip`, so each line stays short whatever the YAML expands to."""
    items = err.errors(include_url=False)
    lines = []
    for item in items[:MAX_PROBLEM_LINES]:
        loc = tuple(item["loc"])
        key = shorten(".".join(str(p) for p in loc), 120)
        if item["type"] == "extra_forbidden":
            parent = _model_for(loc[:-1])
            valid = ", ".join(parent.model_fields) if parent else "?"
            section = shorten(".".join(str(p) for p in loc[:-1]), 120) or "top level"
            lines.append(f"{source}: unknown key '{key}' (valid keys in {section}: {valid})")
        elif item["type"] == "missing":  # its input is the whole enclosing section: not worth echoing
            lines.append(f"{source}: {key}: {item['msg']}; add it")
        else:
            lines.append(f"{source}: {key}: {shorten(item['msg'], 300)} (got {clip(item.get('input'))})")
    if len(items) > MAX_PROBLEM_LINES:
        lines.append(
            f"{source}: {len(items) - MAX_PROBLEM_LINES} more problem(s) not shown; fix the ones above and run again"
        )
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
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise MedsegError(f"{path}: expected a mapping of sections (data:, train:, ...) at the top level")
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    for key in ("dataset", "plan", "cache_dir", "review_marks"):
        value = data.get(key)
        if isinstance(value, str):
            value = expand(value)
            data[key] = value if Path(value).is_absolute() else str((path.parent / value).resolve())
    for assignment in overrides:
        apply_override(raw, assignment)
    moved = migrate(raw)
    if moved:
        print(f"{path}: renamed key(s) {', '.join(moved)}; use the new names", file=sys.stderr)
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise MedsegError(format_validation_error(err, str(path))) from None


def _read_yaml(path: Path) -> Any:
    """:func:`parse_yaml` of a config file, at most :data:`MAX_CONFIG_BYTES` of it read. Aliases
    stay shared references (safe_load does not copy them), so a small file of nested aliases loads
    small; every later echo of it goes through :func:`medseg.errors.clip`.

    Raises:
        MedsegError: a file over the size bound, unreadable, or not YAML.
    """
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise MedsegError(
                f"{path}: is larger than {MAX_CONFIG_BYTES // 1000} kB, not an experiment config; "
                "pass the path of a YAML file such as configs/demo.yaml"
            )
        return parse_yaml(data.decode("utf-8")) or {}
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        raise yaml_syntax_error(path, exc) from None


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
