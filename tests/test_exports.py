"""`ares-data export sft|prm|dpo`: records are right, and the real TRL trainers take one step on them."""

from __future__ import annotations

from pathlib import Path

import pytest

from ares_data.answers import parse_answer
from ares_data.prompting import format_problem
from ares_data.store import Store
from ares_data.testing.lineage import build_lineage
from tests.helpers import data


@pytest.fixture
def lineage(store_dir: Path) -> dict:
    return build_lineage(Store(store_dir))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ares_train.tiny import build_tiny_text_model

    return build_tiny_text_model(tmp_path_factory.mktemp("tiny") / "llama", tokenizer_kind="sentencepiece")


def _args(out: Path) -> dict:
    return dict(output_dir=str(out), max_steps=1, per_device_train_batch_size=2, report_to=[], use_cpu=True,
                save_strategy="no", logging_steps=1)


def _params(model) -> dict:
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def _changed(before: dict, model) -> bool:
    return any(not (before[k] == v.detach()).all() for k, v in model.named_parameters() if k in before)


def test_format_problem_and_answer_parsing() -> None:
    p = {"question": "Will they attract?", "context": "Two magnets.", "choices": ["repel", "attract"]}
    text = format_problem(p)
    assert text.startswith("Question: Will they attract?\nContext: Two magnets.\n"
                           "Options: (A) repel (B) attract")
    assert format_problem({"question": "Q?", "choices": []}).count("\n") == 1  # no empty context/options
    assert parse_answer("Like poles repel. So the answer is repel.", p["choices"]).index == 0
    assert parse_answer("Hmm. The answer is (B).", p["choices"]).index == 1
    assert parse_answer("Therefore, the correct answer is", p["choices"]).index is None
    assert parse_answer("No answer given.", p["choices"]).index is None


def test_export_sft_records_and_sfttrainer_step(lineage: dict, tmp_path: Path, tiny_model: Path) -> None:
    r = data(["export", "sft", "fixes", "-o", "sft", "--no-images", "--json"])
    assert r.exit_code == 0, r.output
    out = r.json()
    assert out["kind"] == "sft-text" and out["rows"] == 15 and out["counts"] == {"skipped_failed": 3}
    v = Store().resolve("sft")
    assert v.manifest["parents"][0]["ref"] == lineage["corrections"].ref
    ds = v.load()
    assert set(ds.column_names) == {"problem_id", "rationale_id", "prompt", "completion"}
    row = ds[0]
    assert row["prompt"].startswith("Question: Which option")
    assert row["completion"].startswith("First we look")

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    before = _params(model)
    trainer = SFTTrainer(model=model, args=SFTConfig(**_args(tmp_path / "o")), train_dataset=ds,
                         processing_class=AutoTokenizer.from_pretrained(tiny_model))
    result = trainer.train()
    assert result.training_loss > 0 and _changed(before, model)


def test_export_sft_conversational_and_images(lineage: dict, tiny_model: Path, tmp_path: Path) -> None:
    r = data(["export", "sft", "fixes", "-o", "chat", "--conversational", "--json"])
    assert r.exit_code == 0, r.output
    assert r.json()["kind"] == "sft-chat"  # the sample problems have images -> kept by default
    ds = Store().load("chat")
    row = ds[0]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    assert len(row["images"]) == 1 and row["images"][0].size == (8, 8)
    assert sum(1 for imgs in ds["images"] if imgs) == 8  # every other problem has an image

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    text_only = ds.remove_columns("images")
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model),
                         args=SFTConfig(**_args(tmp_path / "o")), train_dataset=text_only,
                         processing_class=AutoTokenizer.from_pretrained(tiny_model))
    assert trainer.train().training_loss > 0


def test_export_prm_labels_and_prmtrainer_step(lineage: dict, tiny_model: Path, tmp_path: Path) -> None:
    r = data(["export", "prm", "scores", "-o", "prm", "--threshold", "0.5", "--json"])
    assert r.exit_code == 0, r.output
    ds = Store().load("prm")
    assert len(ds) == 16 and r.json()["counts"] == {"skipped_failed": 2}
    for row in ds:
        assert len(row["completions"]) == len(row["labels"]) == len(row["scores"]) == 3
        assert row["labels"] == [s >= 0.5 for s in row["scores"]]

    from transformers import AutoModelForTokenClassification, AutoTokenizer
    from trl.experimental.prm import PRMConfig, PRMTrainer

    model = AutoModelForTokenClassification.from_pretrained(tiny_model, num_labels=2)
    before = _params(model)
    trainer = PRMTrainer(model=model, args=PRMConfig(**_args(tmp_path / "o")), train_dataset=ds,
                         processing_class=AutoTokenizer.from_pretrained(tiny_model))
    assert trainer.train().training_loss > 0 and _changed(before, model)


def test_export_dpo_pairs_and_dpotrainer_step(lineage: dict, tiny_model: Path, tmp_path: Path) -> None:
    r = data(["export", "dpo", "scores", "-o", "dpo", "--no-images", "--json"])
    assert r.exit_code == 0, r.output
    ds = Store().load("dpo")
    assert len(ds) == 5 and r.json()["counts"]["no_pair"] == 1  # p5: one ok rationale, nothing to pair
    for row in ds:
        assert row["chosen_score"] > row["rejected_score"] and row["chosen"] != row["rejected"]

    r = data(["export", "dpo", "scores", "-o", "dpo-ans", "--pair-by", "answer", "--json"])
    assert r.exit_code == 0, r.output
    ans = Store().load("dpo-ans")
    assert "images" in ans.column_names and r.json()["counts"]["no_pair"] == 1  # p5: only one ok rationale
    for row in ans:  # with images the texts are conversational: [{"role": "assistant", "content": ...}]
        truth = ["zero", "one"][int(row["problem_id"][1:]) % 2]
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert chosen.endswith(f"answer is {truth}.") and not rejected.endswith(f"is {truth}.")

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    before = _params(model)
    trainer = DPOTrainer(model=model, args=DPOConfig(**_args(tmp_path / "o")), train_dataset=ds,
                         processing_class=AutoTokenizer.from_pretrained(tiny_model))
    assert trainer.train().training_loss > 0 and _changed(before, model)


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ares_train.tiny import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny") / "vlm")


def test_exports_with_images_train_a_tiny_vlm(lineage: dict, tiny_vlm: Path, tmp_path: Path) -> None:
    """Rows with and without images mixed, as exported: TRL's vision path takes them as they are."""
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    assert data(["export", "sft", "fixes", "-o", "sft-vl"]).exit_code == 0
    assert data(["export", "dpo", "scores", "-o", "dpo-vl"]).exit_code == 0
    sft, dpo = Store().resolve("sft-vl"), Store().resolve("dpo-vl")
    assert (sft.kind, dpo.kind) == ("sft", "dpo")
    row = sft.load()[0]
    assert row["prompt"][0]["role"] == "user" and row["prompt"][0]["content"].startswith("Question:")
    assert row["completion"][0]["role"] == "assistant" and len(row["images"]) == 1
    processor = AutoProcessor.from_pretrained(tiny_vlm)
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm)
    before = _params(model)
    trainer = SFTTrainer(model=model, args=SFTConfig(**_args(tmp_path / "sft"), max_length=None),
                         train_dataset=sft.load(), processing_class=processor)
    assert trainer.train().training_loss > 0 and _changed(before, model)
    trainer = DPOTrainer(model=AutoModelForImageTextToText.from_pretrained(tiny_vlm),
                         args=DPOConfig(**_args(tmp_path / "dpo"), max_length=None), train_dataset=dpo.load(),
                         processing_class=processor)
    assert trainer.train().training_loss > 0


def test_export_errors(lineage: dict) -> None:
    r = data(["export", "prm", "fixes", "-o", "x"])
    assert r.exit_code == 2 and "is a corrections dataset, but a scores dataset is needed" in r.stderr
    r = data(["export", "dpo", "scores", "-o", "x", "--pair-by", "vibes"])
    assert r.exit_code != 0 and "vibes" in r.stderr
    r = data(["export", "sft", "nope", "-o", "x"])
    assert r.exit_code == 1 and "no dataset named 'nope'" in r.stderr
    assert Store().versions("x") == []


@pytest.mark.parametrize("sub", ["sft", "prm", "dpo"])
def test_export_help(sub: str) -> None:
    r = data(["export", sub, "--help"])
    assert r.exit_code == 0 and "--output" in r.stdout
