"""Dataset cards: Hub YAML metadata + the Markdown of `data_cards/<kind>.md`, filled from the manifest.

`render_card(store, version, ...)` returns the README.md text that `ares-data push` uploads and
`ares-data card` prints. The YAML block (configs with data_files, license, task_categories, tags,
size_categories, pretty_name) is produced with `yaml.safe_dump`, so it always parses.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from string import Template
from typing import Any

import yaml

from data_cards import template

from .errors import UsageError
from .store import Store, Version

HUB = "https://huggingface.co"
SPLIT = "train"
CITATION = """```bibtex
@inproceedings{byun2024ares,
  title         = {{ARES}: Alternating Reinforcement Learning and Supervised Fine-Tuning for Enhanced
                   Multi-Modal Chain-of-Thought Reasoning Through Diverse {AI} Feedback},
  author        = {Byun, Ju-Seung and Chun, Jiyun and Kil, Jihyung and Perrault, Andrew},
  booktitle     = {Proceedings of the 2024 Conference on Empirical Methods in Natural Language Processing},
  year          = {2024},
  eprint        = {2407.00087},
  archivePrefix = {arXiv},
}
```"""
TASKS = {
    "problems": ["visual-question-answering", "question-answering"],
    "rationales": ["text-generation"],
    "scores": ["reinforcement-learning", "text-classification"],
    "corrections": ["text-generation"],
    "sft": ["text-generation"],
    "sft-chat": ["text-generation"],
    "prm": ["token-classification", "reinforcement-learning"],
    "dpo": ["reinforcement-learning", "text-generation"],
}
_SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
          (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (10**9, "100M<n<1B"), (10**10, "1B<n<10B"),
          (10**11, "10B<n<100B"), (10**12, "100B<n<1T")]


@dataclass
class CardConfig:
    """One dataset in the (pushed) repo: a Hub config whose files are `data/<name>/train-*.parquet`."""

    name: str
    version: Version
    default: bool = False

    @property
    def data_files(self) -> str:
        return f"data/{self.name}/{SPLIT}-*.parquet"


def _base(kind: str) -> str:
    return kind[: -len("-text")] if kind.endswith("-text") else kind


def size_category(n: int) -> str:
    for limit, label in _SIZES:
        if n < limit:
            return label
    return "n>1T"


def license_id(license: str) -> str:
    """A Hub license id (`cc-by-4.0`, `mit`, `apache-2.0`, `other`): lower case, no spaces. The Hub refuses a
    commit whose card names a license it does not know, so obvious mistakes are caught before any upload."""
    lic = license.strip().lower()
    if not re.fullmatch(r"[a-z0-9][a-z0-9.+\-]*", lic):
        raise UsageError(f"--license '{license}' is not a Hub license id",
                         hint="use an id from https://huggingface.co/docs/hub/repositories-licenses, "
                              "e.g. cc-by-4.0, mit, apache-2.0, or 'other'")
    return lic


def metadata(configs: list[CardConfig], license: str) -> dict[str, Any]:
    main = next(c for c in configs if c.default)
    kinds = sorted({_base(c.version.kind) for c in configs})
    tasks = sorted({t for k in kinds for t in TASKS.get(k, ["text-generation"])})
    tags = ["ares", "chain-of-thought", "sentence-level-feedback", *kinds]
    if any(k in ("sft", "sft-chat", "prm", "dpo") for k in kinds):
        tags.append("trl")
    return {
        "pretty_name": f"ARES {main.version.kind}: {main.version.ref}",
        "license": license_id(license),
        "task_categories": tasks,
        "tags": tags,
        "size_categories": [size_category(int(main.version.manifest.get("rows") or 0))],
        "configs": [
            {"config_name": c.name, "data_files": [{"split": SPLIT, "path": c.data_files}],
             **({"default": True} if c.default else {})}
            for c in configs
        ],
    }


def teacher_of(manifest: dict[str, Any]) -> tuple[str, str] | None:
    t = manifest.get("teacher") or manifest.get("params", {}).get("teacher")
    if isinstance(t, dict):
        return str(t.get("provider", "?")), str(t.get("model", "?"))
    if isinstance(t, str) and t:
        provider, _, model = t.partition(":")
        return provider, model or "?"
    return None


def prompt_text(manifest: dict[str, Any]) -> str | None:
    """The prompt template text: stored in the manifest, or a shipped template with the same sha256."""
    if manifest.get("prompt_text"):
        return str(manifest["prompt_text"])
    sha = manifest.get("prompt_sha") or manifest.get("params", {}).get("prompt_sha")
    if not sha:
        return None
    import hashlib
    from pathlib import Path

    prompts = Path(__file__).resolve().parent / "prompts"
    for path in sorted(prompts.glob("*.txt")) if prompts.is_dir() else []:
        raw = path.read_bytes()
        if hashlib.sha256(raw).hexdigest() == sha:
            return raw.decode("utf-8")
    return None


def _inherited_teacher(store: Store, version: Version) -> tuple[str, str, str] | None:
    """The teacher of the nearest ancestor that had one (exports inherit it from scores/corrections)."""
    for parent in store.ancestors(version, skip_unreadable=True):
        found = teacher_of(parent.manifest)
        if found:
            return (*found, parent.ref)
    return None


def provenance(store: Store, version: Version, configs: list[CardConfig], repo: str | None, endpoint: str,
               tag: str | None = None) -> str:
    m = version.manifest
    lines = [f"- dataset: `{version.ref}` (kind `{version.kind}`), {m.get('rows')} rows, created "
             f"{m.get('created_at')} with ares-toolkit {m.get('tool_version')}",
             f"- fingerprint: `{m.get('fingerprint')}`"]
    teacher = teacher_of(m)
    inherited = None if teacher else _inherited_teacher(store, version)
    if teacher:
        lines.append(f"- teacher: provider `{teacher[0]}`, model `{teacher[1]}`")
    elif inherited:
        lines.append(f"- teacher (of `{inherited[2]}`): provider `{inherited[0]}`, model `{inherited[1]}`")
    command = m.get("command")
    if command:
        argv = [str(c) for c in command]
        if argv and "/" in argv[0]:
            argv[0] = argv[0].rsplit("/", 1)[1]  # the console script's name, not this machine's path
        lines.append(f"- command:\n\n  ```\n  {shlex.join(argv)}\n  ```")
    sha = m.get("prompt_sha") or m.get("params", {}).get("prompt_sha")
    if sha:
        lines.append(f"- prompt template sha256: `{sha}`")
        text = prompt_text(m)
        if text:
            lines.append("\n<details><summary>prompt template</summary>\n\n```text\n"
                         f"{text.strip()}\n```\n\n</details>\n")
    if m.get("params"):
        lines.append(f"- parameters: `{json.dumps(m['params'], sort_keys=True, default=str)}`")
    lines.extend(_parent_lines(m.get("parents", []), configs, repo, endpoint, tag or "main"))
    return "\n".join(lines)


def _parent_lines(parents: list[dict[str, Any]], configs: list[CardConfig], repo: str | None,
                  endpoint: str, rev: str) -> list[str]:
    if not parents:
        return ["- parents: none (a source dataset)"]
    by_ref = {c.version.ref: c for c in configs}
    out = ["- parents:"]
    for p in parents:
        cfg = by_ref.get(p["ref"])
        if cfg and repo:
            link = f"{endpoint}/datasets/{repo}/tree/{rev}/data/{cfg.name}"
            out.append(f"  - [`{p['ref']}`]({link}) ({p.get('kind')}): config `{cfg.name}` of this repo")
        else:
            out.append(f"  - `{p['ref']}` ({p.get('kind')}, fingerprint `{str(p.get('fingerprint'))[:16]}…`)")
    return out


def statistics(version: Version, stats: dict[str, Any] | None, image: str | None) -> str:
    m = version.manifest
    lines = [f"- rows: {m.get('rows')}"]
    counts = m.get("counts") or {}
    if counts:
        lines.append("- counts: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    st = stats or {}
    if "failed" in st:
        reasons = "; ".join(f"{n} x {r or '(no message)'}" for r, n in st["failure_reasons"].items())
        lines.append(f"- failed rows: {st['failed']} ({st['failure_rate']:.1%})" + (f": {reasons}" if reasons
                                                                                    else ""))
    if "score" in st:
        sc = st["score"]
        lines.append(f"- sentence scores: {st['sentences']} sentences, mean {sc['mean']}, "
                     f"median {sc['median']}, std {sc['std']}; "
                     f"mean per rationale {st['rationale_mean_score']}")
        pos = ", ".join(f"{p['position']}: {p['mean']}" for p in st["by_position"][:10])
        lines.append(f"- mean score by sentence position: {pos}")
    if "duplicate_rationale_rate" in st:
        dup = st["duplicate_rationale_rate"]
        lines.append(f"- duplicate rationales (same text, same problem): {dup:.1%}")
    if "edits" in st:
        rates = ", ".join(f"{k} {v:.1%}" for k, v in st["edits"]["rates"].items())
        changed = st["edits"]["changed_rate"]
        lines.append(f"- edits (share of sentences): {rates}; rationales changed {changed:.1%}")
    labels = {"with_image": "problems with an image", "subjects": "problems by subject",
              "sentences_per_rationale": "sentences per rationale", "steps": "steps (sentences)",
              "positive_label_rate": "share of steps labelled good", "mean_score_margin":
              "mean score margin chosen - rejected"}
    for key, label in labels.items():
        if key in st:
            value = st[key]
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            lines.append(f"- {label}: {value}")
    usage = m.get("usage") or {}
    tokens = st.get("tokens") or {"input": usage.get("input_tokens"), "output": usage.get("output_tokens")}
    cost = m.get("cost_usd", st.get("cost_usd"))
    if tokens.get("input") is not None or cost is not None:
        lines.append(f"- tokens: {tokens.get('input')} input, {tokens.get('output')} output; "
                     f"estimated cost ${float(cost or 0):.4f}")
    if image:
        lines.append(f"\n![score distribution and mean score by sentence position]({image})")
    return "\n".join(lines)


def loading(configs: list[CardConfig], repo: str | None, tag: str | None, version: Version) -> str:
    main = next(c for c in configs if c.default)
    target = repo or "OWNER/NAME"
    rev = f', revision="{tag}"' if tag else ""
    code = ["```python", "from datasets import load_dataset", "",
            f'ds = load_dataset("{target}"{rev}, split="{SPLIT}")  # the default config: {main.name}']
    for c in configs:
        if not c.default:
            code.append(f'{c.name} = load_dataset("{target}", "{c.name}"{rev}, split="{SPLIT}")')
    code.append("```")
    pull_ref = f"{target}@{tag}" if tag else target
    code.append(f"\nWith the toolkit, `ares-data pull {pull_ref}` brings it back into a local store with its "
                "manifest, checking its content fingerprint.")
    return "\n".join(code)


def layout(configs: list[CardConfig], tag: str | None) -> str:
    rows = "\n".join(f"| `{c.name}` | `{c.version.ref}` ({c.version.kind}) | `{c.data_files}` | "
                     f"`ares/{c.name}/manifest.json` |" for c in configs)
    tag_line = (f"The Hub tag `{tag}` marks the commit holding exactly this version." if tag else "")
    head = "| config | dataset | data files | ARES manifest |\n|---|---|---|---|\n"
    intro = "## Repository layout\n\nEach dataset of the lineage is a config of this repo:\n\n"
    return f"{intro}{head}{rows}\n\n{tag_line}"


def render_card(store: Store, version: Version, *, configs: list[CardConfig] | None = None,
                repo: str | None = None, tag: str | None = None, license: str = "other",
                stats: dict[str, Any] | None = None, image: str | None = None, endpoint: str = HUB) -> str:
    """The README.md (YAML block + Markdown) for `version`, pushed as the default config of `configs`."""
    configs = configs or [CardConfig(version.kind, version, default=True)]
    if stats is None:
        from .stats import compute

        stats = compute(store, version)
    meta = yaml.safe_dump(metadata(configs, license), sort_keys=False, allow_unicode=True).strip()
    fields = "See `ares-data show " + version.ref + "` for the schema."
    values = {
        "metadata": meta, "title": f"ARES {version.kind} dataset `{version.ref}`",
        "summary": f"This card describes `{version.ref}`" + (f", pushed to `{repo}`" if repo else "") + ".",
        "provenance": provenance(store, version, configs, repo, endpoint.rstrip("/"), tag),
        "statistics": statistics(version, stats, image), "loading": loading(configs, repo, tag, version),
        "layout": layout(configs, tag), "citation": CITATION, "fields": fields,
    }
    return Template(template(version.kind)).safe_substitute(values)


def card_metadata(card: str) -> dict[str, Any]:
    """Parse the YAML block at the top of a card (for checks and tests)."""
    if not card.startswith("---\n"):
        raise ValueError("a card starts with a '---' YAML block")
    block = card[4:].split("\n---\n", 1)[0]
    return yaml.safe_load(block) or {}
