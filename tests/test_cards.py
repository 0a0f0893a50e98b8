"""Dataset cards: valid Hub YAML, every section, one template per kind, `ares-data card`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from ares_data.cards import card_metadata, render_card
from ares_data.export import export_dpo, export_prm, export_sft
from ares_data.store import Store
from ares_data.testing.fake_hub import card_metadata_errors
from ares_data.testing.lineage import build_lineage, rationale_rows, score_rows
from data_cards import TEMPLATE_DIR, template_path
from tests.helpers import data


@pytest.fixture
def lineage(store_dir: Path) -> dict:
    return build_lineage(Store(store_dir))


def test_card_command_prints_yaml_and_every_section(lineage: dict) -> None:
    r = data(["card", "scores", "--repo", "me/ares-scores", "--license", "cc-by-4.0"])
    assert r.exit_code == 0, r.output
    card = r.stdout
    assert card.startswith("---\n")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["license"] == "cc-by-4.0"
    assert "reinforcement-learning" in meta["task_categories"] and "ares" in meta["tags"]
    assert meta["size_categories"] == ["n<1K"]
    assert meta["configs"] == [{"config_name": "scores", "default": True,
                                "data_files": [{"split": "train", "path": "data/scores/train-*.parquet"}]}]
    from huggingface_hub import DatasetCard

    hub_card = DatasetCard(card)  # the Hub client's own parser agrees
    assert hub_card.data.license == "cc-by-4.0" and hub_card.data.configs[0]["config_name"] == "scores"
    assert card_metadata_errors(card) == []
    for needle in (
        "## How it was made", "provider `reference`, model `offline-v1`", "score rats --teacher reference",
        f"prompt template sha256: `{lineage['scores'].manifest['prompt_sha']}`",
        "Grade each sentence between 0.0 and 1.0.",  # the prompt text
        "`rats@v1` (rationales", "## Fields", "| `scores` | list[float32]", "## Statistics",
        "- rows: 18", "failed rows: 2 (11.1%): 2 x unparseable reply", "mean score by sentence position",
        "tokens: 2554 input", "![score distribution", 'load_dataset("me/ares-scores", revision="v1"',
        "Byun, Ju-Seung", "2407.00087", "EMNLP",
    ):
        assert needle in card, needle
    assert "${" not in card


def test_card_with_parents_links_configs_and_finds_shipped_prompt(lineage: dict, store_dir: Path) -> None:
    store = Store(store_dir)
    shipped = Path(__file__).resolve().parent.parent / "ares_data" / "prompts" / "score.txt"
    sha = hashlib.sha256(shipped.read_bytes()).hexdigest()
    rats = rationale_rows(6, 3)
    v = store.publish("scores2", "scores", score_rows(rats), parents=[lineage["rationales"]],
                      extra={"teacher": "anthropic:claude-3-haiku-20240307", "prompt_sha": sha})
    r = data(["card", v.ref, "--repo", "me/x", "--with-parents"])
    assert r.exit_code == 0, r.output
    meta = card_metadata(r.stdout)
    assert [c["config_name"] for c in meta["configs"]] == ["scores", "rationales", "problems"]
    assert sum(1 for c in meta["configs"] if c.get("default")) == 1
    assert "provider `anthropic`, model `claude-3-haiku-20240307`" in r.stdout
    assert "You are a careful teacher" in r.stdout  # prompt text recovered from its sha256
    assert "[`rats@v1`](https://huggingface.co/datasets/me/x/tree/v1/data/rationales)" in r.stdout
    assert "## Repository layout" in r.stdout and 'load_dataset("me/x", "problems", revision="v1"' in r.stdout


def test_every_kind_has_a_template_and_renders(lineage: dict, store_dir: Path) -> None:
    store = Store(store_dir)
    versions = [*lineage.values(), export_sft(store, "fixes", "sft"), export_prm(store, "scores", "prm"),
                export_dpo(store, "scores", "dpo", images=False)]
    for kind in ("problems", "rationales", "scores", "corrections", "sft", "prm", "dpo"):
        assert (TEMPLATE_DIR / f"{kind}.md").is_file()
    assert template_path("dpo-text").name == "dpo.md" and template_path("judgments").name == "generic.md"
    for v in versions:
        card = render_card(store, v)
        meta = card_metadata(card)
        assert meta["configs"][0]["config_name"] == v.kind
        assert card_metadata_errors(card) == [] and "${" not in card
        assert f"`{v.ref}`" in card and "## Citation" in card and "## Fields" in card
    sft = render_card(store, versions[4])
    assert "trl" in card_metadata(sft)["tags"] and "SFTTrainer" in sft and "skipped_failed 3" in sft
    edits = render_card(store, lineage["corrections"])
    assert "edits (share of sentences)" in edits
    prm = render_card(store, versions[5])
    assert "share of steps labelled good" in prm
    assert "teacher (of `scores@v1`): provider `reference`, model `offline-v1`" in prm
    assert "mean score margin chosen - rejected" in render_card(store, versions[6])
    assert "problems with an image: 3" in render_card(store, lineage["problems"])


def test_card_errors(store_dir: Path) -> None:
    r = data(["card", "nope"])
    assert r.exit_code == 1 and "no dataset named 'nope'" in r.stderr


def test_size_categories_are_hub_values() -> None:
    from ares_data.cards import size_category

    assert [size_category(n) for n in (0, 999, 1_000, 99_999, 5_000_000)] == [
        "n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "1M<n<10M"]
    assert [size_category(n) for n in (200_000_000, 2 * 10**9, 2 * 10**10, 2 * 10**11, 2 * 10**12)] == [
        "100M<n<1B", "1B<n<10B", "10B<n<100B", "100B<n<1T", "n>1T"]
