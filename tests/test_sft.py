"""`ares-train sft` through the CLI on tiny models: loss logged, weights change, LoRA, --merge, resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import data, train

torch = pytest.importorskip("torch")

from ares_data.store import Store  # noqa: E402
from ares_train.checkpoint import MANIFEST  # noqa: E402
from ares_train.modeling import load_policy, weights_fingerprint  # noqa: E402
from ares_train.tiny import build_tiny_text_model, build_tiny_vlm  # noqa: E402


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Sample problems + sample rationales + reference-teacher corrections, two of them marked failed."""
    from ares_data.sample import RATIONALES, SAMPLE_DIR

    root = tmp_path_factory.mktemp("sft")
    store = root / "store"
    for args in (["ingest", "scienceqa", SAMPLE_DIR, "-o", "sqa"],
                 ["import-rationales", RATIONALES, "--problems", "sqa", "-o", "samp"],
                 ["correct", "samp", "--teacher", "reference", "-o", "corr"]):
        r = data(["--store", store, *args])
        assert r.exit_code == 0, r.output
    s = Store(store)
    rows = list(s.resolve("corr").load())[:24]
    for row in rows[:2]:
        row.update(status="failed", corrected="", error="teacher reply was not JSON")
    s.publish("few", "corrections", rows, parents=[s.resolve("samp")])
    return {"store": store, "bpe": build_tiny_text_model(root / "bpe"), "vlm": build_tiny_vlm(root / "vlm")}


def sft(env: dict[str, Any], model: Path, out: Path, *extra: Any) -> dict[str, Any]:
    r = train(["--store", env["store"], "sft", "--model", model, "--corrections", "few", "-o", out,
               "--batch-size", 4, "--logging-steps", 1, "--json", *extra])
    assert r.exit_code == 0, r.output
    return r.json()


def state(path: Path) -> dict[str, Any]:
    return {k: v.clone() for k, v in load_policy(path).model.state_dict().items()}


def test_sft_full_text_model(env: dict[str, Any], tmp_path: Path) -> None:
    out = sft(env, env["bpe"], tmp_path / "o", "--max-steps", 3, "--lr", 1e-3, "--save-steps", 2)
    assert out["steps"] == 3 and len(out["losses"]) == 3 and all(x > 0 for x in out["losses"])
    assert out["counts"] == {"used": 22, "failed": 2, "empty": 0}
    before, after = state(env["bpe"]), state(tmp_path / "o")
    assert all(not torch.equal(before[k], after[k]) for k in before if k.endswith("q_proj.weight"))
    manifest = json.loads((tmp_path / "o" / MANIFEST).read_text())
    assert manifest["stage"] == "sft" and manifest["base_model"] == str(env["bpe"])
    assert manifest["base_fingerprint"] == weights_fingerprint(env["bpe"])
    fp = weights_fingerprint(tmp_path / "o")
    assert manifest["weights_fingerprint"] == fp != manifest["base_fingerprint"]
    assert [d["ref"] for d in manifest["datasets"]] == ["few@v1", "sqa@v1"]
    assert manifest["params"]["lr"] == 1e-3 and manifest["counts"]["failed"] == 2
    assert json.loads((tmp_path / "o" / "checkpoint-2" / MANIFEST).read_text())["global_step"] == 2


def test_sft_lora_changes_only_adapter_and_merges(env: dict[str, Any], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    out = sft(env, env["bpe"], tmp_path / "o", "--max-steps", 2, "--lr", 1e-2, "--lora-r", 4, "--merge",
              "--lora-target-modules", "q_proj,v_proj")
    adapter = load_policy(tmp_path / "o")
    assert adapter.is_lora and out["merged"] == str(tmp_path / "o" / "merged")
    base = state(env["bpe"])
    tuned = adapter.model.state_dict()
    lora_b = [k for k in tuned if "lora_B" in k]
    assert lora_b and all(tuned[k].abs().sum() > 0 for k in lora_b)  # lora_B starts at zero
    assert {k.split(".lora_B")[0].split(".")[-1] for k in lora_b} == {"q_proj", "v_proj"}
    for name, value in tuned.items():  # every base weight is unchanged
        if "lora_" not in name:
            plain = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(value, base[plain]), name
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "o" / "merged")
    ids = torch.tensor([[5, 40, 41, 42, 43]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, adapter.model(ids).logits, atol=1e-5)
        assert not torch.allclose(merged(ids).logits, load_policy(env["bpe"]).model(ids).logits, atol=1e-5)
    manifest = json.loads((tmp_path / "o" / MANIFEST).read_text())
    assert manifest["lora"] and manifest["weights_fingerprint"] == weights_fingerprint(adapter)
    # a rollout of the adapter records the adapter's fingerprint (what PPO checks against)
    r = train(["--store", env["store"], "rollout", "--model", tmp_path / "o", "--problems", "sqa", "-o", "ra",
               "--k", 1, "--limit", 2, "--max-new-tokens", 4, "--json"])
    assert r.exit_code == 0, r.output
    fp = r.json()["generator_fingerprint"]
    assert fp == manifest["weights_fingerprint"] != manifest["base_fingerprint"]


def test_sft_vlm_with_images(env: dict[str, Any], tmp_path: Path) -> None:
    out = sft(env, env["vlm"], tmp_path / "o", "--max-steps", 2, "--lr", 1e-3, "--report-to", "tensorboard")
    assert out["steps"] == 2 and len(out["losses"]) == 2
    before, after = state(env["vlm"]), state(tmp_path / "o")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any("language_model" in k for k in changed) and any("vision" in k for k in changed)
    assert list((tmp_path / "o" / "runs").rglob("events.out.tfevents*"))  # tensorboard, offline


def test_sft_resume(env: dict[str, Any], tmp_path: Path) -> None:
    first = sft(env, env["bpe"], tmp_path / "o", "--max-steps", 2, "--save-steps", 2, "--lr", 1e-3)
    resumed = sft(env, env["bpe"], tmp_path / "o", "--max-steps", 4, "--save-steps", 2, "--lr", 1e-3,
                  "--resume")
    assert resumed["steps"] == 4
    assert resumed["losses"][:2] == first["losses"]  # the history of the first run was carried over
    r = train(["--store", env["store"], "sft", "--model", env["bpe"], "--corrections", "few",
               "-o", tmp_path / "o", "--max-steps", 1])
    assert r.exit_code == 0 and "Warning:" in r.stderr and "--resume" in r.stderr
    r = train(["--store", env["store"], "sft", "--model", env["bpe"], "--corrections", "few",
               "-o", tmp_path / "empty", "--resume"])
    assert r.exit_code == 1 and "no checkpoint" in r.stderr


def test_sft_vlm_lora_adapts_only_the_language_model(env: dict[str, Any], tmp_path: Path) -> None:
    from transformers import AutoModelForImageTextToText

    sft(env, env["vlm"], tmp_path / "o", "--max-steps", 1, "--lr", 1e-2, "--lora-r", 4, "--merge")
    tuned = load_policy(tmp_path / "o").model.state_dict()
    adapted = {k.split(".lora_B")[0] for k in tuned if "lora_B" in k}
    assert adapted and all("language_model" in k for k in adapted)  # the vision tower stays frozen
    assert all(tuned[k].abs().sum() > 0 for k in tuned if "lora_B" in k)
    base, merged = state(env["vlm"]), AutoModelForImageTextToText.from_pretrained(tmp_path / "o" / "merged")
    merged_state = merged.state_dict()
    vision = [k for k in base if "vision_tower" in k]
    assert vision and all(torch.equal(base[k], merged_state[k]) for k in vision)
    assert any(not torch.equal(base[k], merged_state[k]) for k in base if k.endswith("q_proj.weight"))
