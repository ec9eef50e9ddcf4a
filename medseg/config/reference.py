"""The configuration reference in README.md, generated from the pydantic models.

``python -m medseg.config.reference`` rewrites the block between the markers in README.md;
``tests/test_config_reference.py`` fails when the block is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import BaseModel

from medseg.config.schema import ExperimentConfig
from medseg.io.write import write_text

BEGIN, END = "<!-- config-reference:begin -->", "<!-- config-reference:end -->"


def _default(field) -> str:
    if field.is_required():
        return "required"
    value = field.default
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, tuple):
        value = list(value)
    return f"`{value}`" if value is not None else "`null`"


def _type(field) -> str:
    text = str(field.annotation).replace("typing.", "").replace("pathlib.", "")
    for noise in ("<class '", "'>"):
        text = text.replace(noise, "")
    return text.replace("|", "\\|")


def reference() -> str:
    """One Markdown table per config section: key, type, default, meaning."""
    out = []
    for name, section in ExperimentConfig.model_fields.items():
        model = section.annotation
        out += [f"**`{name}`** — {model.__doc__.strip().splitlines()[0]}", "",
                "| key | type | default | meaning |", "|---|---|---|---|"]
        for key, field in model.model_fields.items():
            out.append(f"| `{name}.{key}` | {_type(field)} | {_default(field)} | {field.description or ''} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def render(readme: str) -> str:
    """README text with the block between the markers replaced by the current reference."""
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{reference()}{END}{tail}"


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "README.md"
    write_text(render(path.read_text()), path)
    print(f"updated the configuration reference in {path}")


if __name__ == "__main__":
    main()
