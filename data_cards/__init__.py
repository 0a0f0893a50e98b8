"""Dataset-card templates, one Markdown file per dataset kind (rendered by `ares_data.cards`).

Each template is a `string.Template`: `${metadata}` (the YAML block), `${title}`, `${summary}`,
`${provenance}`, `${statistics}`, `${loading}`, `${layout}` and `${citation}` are filled in by the renderer;
the prose and the field table are the template's own. `generic.md` serves kinds without a template.
"""

from __future__ import annotations

from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parent


def template_path(kind: str) -> Path:
    """The template for `kind` (`sft-text` uses `sft.md`), or `generic.md`."""
    base = kind[: -len("-text")] if kind.endswith("-text") else kind
    path = TEMPLATE_DIR / f"{base}.md"
    return path if path.is_file() else TEMPLATE_DIR / "generic.md"


def template(kind: str) -> str:
    return template_path(kind).read_text(encoding="utf-8")
