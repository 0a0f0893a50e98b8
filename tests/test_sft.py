"""`ares-train sft` through the CLI on tiny models: loss logged, weights change, LoRA, --merge, resume."""

from __future__ import annotations

import json
from collections.abc import Callable
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
    rats = list(s.resolve("samp").load())[:20]
    for row in rats[:2]:
        row.update(text="  ", sentences=[])
    s.publish("refs", "rationales", rats, parents=[s.resolve("sqa")])
    return {"store": store, "bpe": build_tiny_text_model(root / "bpe"), "vlm": build_tiny_vlm(root / "vlm")}


def sft(env: dict[str, Any], model: Path, out: Path, *extra: Any) -> dict[str, Any]:
    return sft_on(env, "--corrections", "few", out, "--model", model, *extra)


def sft_on(env: dict[str, Any], option: str, name: str, out: Path, *extra: Any) -> dict[str, Any]:
    """`ares-train sft OPTION NAME -o OUT --json` (the tiny BPE model unless `extra` names --model)."""
    model = [] if "--model" in extra else ["--model", env["bpe"]]
    r = train(["--store", env["store"], "sft", *model, option, name, "-o", out, "--batch-size", 4,
               "--logging-steps", 1, "--json", *extra])
    assert r.exit_code == 0, r.output
    return r.json()


def on_each_batch(monkeypatch: pytest.MonkeyPatch, hook: Callable[[Any, dict[str, Any]], None]) -> None:
    """Call `hook(model, inputs)` on every training batch SFTTrainer computes a loss on."""
    from trl import SFTTrainer

    original = SFTTrainer.compute_loss

    def recording(self: Any, model: Any, inputs: dict[str, Any], *args: Any, **kw: Any) -> Any:
        hook(model, inputs)
        return original(self, model, inputs, *args, **kw)

    monkeypatch.setattr(SFTTrainer, "compute_loss", recording)


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


@pytest.mark.parametrize("source", ["corrections", "rationales"])
def test_sft_trains_on_the_prompt_ids_rollout_and_ppo_use(
        env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    """With a tokenizer that prepends BOS by default (Llama style), SFT's training ids for a correction are
    rollout's prompt ids (no special tokens added) + the completion's ids + EOS, the loss on the latter;
    from a rationales dataset the same, with the rationale's text as the completion."""
    from ares_train.prompting import encode_prompts, response_ids

    model = build_tiny_text_model(tmp_path / "bos", tokenizer_kind="sentencepiece", bos=True)
    seen: list[tuple[tuple[int, ...], int]] = []

    def record(model: Any, inputs: dict[str, Any]) -> None:
        for ids, mask, labels in zip(inputs["input_ids"], inputs["attention_mask"], inputs["labels"],
                                     strict=True):
            real = ids[mask.bool()].tolist()
            seen.append((tuple(real), int((labels[mask.bool()] == -100).sum())))

    on_each_batch(monkeypatch, record)
    name, column = {"corrections": ("few", "corrected"), "rationales": ("refs", "text")}[source]
    r = train(["--store", env["store"], "sft", "--model", model, f"--{source}", name, "-o", tmp_path / "o",
               "--max-steps", 1, "--batch-size", 32, "--json"])
    assert r.exit_code == 0, r.output
    policy = load_policy(model)
    store = Store(env["store"])
    problems = {p["problem_id"]: p for p in store.resolve("sqa").load()}
    expected = []
    for row in store.resolve(name).load():
        if row.get("status", "ok") == "ok" and row[column].strip():
            batch, prompts = encode_prompts(policy, [problems[row["problem_id"]]])
            prompt = batch["input_ids"][0].tolist()
            assert policy.tokenizer(prompts[0])["input_ids"] == [policy.tokenizer.bos_token_id, *prompt]
            completion = response_ids(policy, row[column].strip())
            assert completion[-1] == policy.tokenizer.eos_token_id
            expected.append((tuple(prompt + completion), len(prompt)))
    assert len(expected) == r.json()["counts"]["used"] == (22 if source == "corrections" else 18)
    assert sorted(seen) == sorted(expected)


def test_sft_of_a_bf16_checkpoint_trains_float32_master_weights_under_autocast(
        env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stepping bf16 weights directly rounds small updates away; SFT keeps float32 master weights, computes
    under bf16 autocast, and saves float32 unless --save-dtype says otherwise."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    half = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(env["bpe"], dtype=torch.bfloat16).save_pretrained(half)
    AutoTokenizer.from_pretrained(env["bpe"]).save_pretrained(half)
    outputs: list[Any] = []  # the dtype of a linear layer's output in each training forward pass

    def watch(model: Any, inputs: dict[str, Any]) -> None:
        linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
        if not outputs and not linear._forward_hooks:
            linear.register_forward_hook(lambda module, args, output: outputs.append(output.dtype))
        assert linear.weight.dtype == torch.float32  # the master weights

    on_each_batch(monkeypatch, watch)
    out = sft(env, half, tmp_path / "o", "--max-steps", 3, "--lr", 1e-5)
    assert outputs == [torch.bfloat16] * 3  # computed under bf16 autocast
    assert out["compute_dtype"] == "bfloat16" and out["stored_dtype"] == "bfloat16"
    manifest = json.loads((tmp_path / "o" / MANIFEST).read_text())
    assert manifest["compute_dtype"] == "bfloat16" and manifest["params"]["save_dtype"] == "float32"
    before = {k: v.float() for k, v in state(half).items()}
    after = state(tmp_path / "o")
    with safe_open(str(tmp_path / "o" / "model.safetensors"), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}  # noqa: SIM118
    # every weight gets a gradient except the embedding rows of tokens that never occur
    trained = [k for k in before if "embed_tokens" not in k]
    changed = sum(int((before[k] != after[k]).sum()) for k in trained)
    total = sum(before[k].numel() for k in trained)
    assert changed / total > 0.95, f"only {changed / total:.1%} of the weights changed"
    # --save-dtype original: the checkpoint's own dtype, for export
    sft(env, half, tmp_path / "o16", "--max-steps", 1, "--lr", 1e-5, "--save-dtype", "original")
    with safe_open(str(tmp_path / "o16" / "model.safetensors"), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}  # noqa: SIM118
    assert json.loads((tmp_path / "o16" / "config.json").read_text())["dtype"] == "bfloat16"
    r = train(["--store", env["store"], "sft", "--model", half, "--corrections", "few", "-o", tmp_path / "x",
               "--save-dtype", "int8"])
    assert r.exit_code == 1 and "save_dtype must be one of" in r.stderr


def test_sft_on_rationales_warm_start(env: dict[str, Any], tmp_path: Path) -> None:
    out = sft_on(env, "--rationales", "refs", tmp_path / "o", "--max-steps", 2, "--lr", 1e-3)
    assert out["counts"] == {"used": 18, "failed": 0, "empty": 2}
    assert out["kind"] == "rationales" and out["dataset"] == "refs@v1"
    manifest = json.loads((tmp_path / "o" / MANIFEST).read_text())
    assert [d["ref"] for d in manifest["datasets"]] == ["refs@v1", "sqa@v1"]
    assert manifest["params"]["rationales"] == "refs" and manifest["params"]["corrections"] == ""
    before, after = state(env["bpe"]), state(tmp_path / "o")
    assert all(not torch.equal(before[k], after[k]) for k in before if k.endswith("q_proj.weight"))
    r = train(["--store", env["store"], "sft", "--model", env["bpe"], "--rationales", "refs", "-o",
               tmp_path / "p", "--max-steps", 1])
    assert r.exit_code == 0 and "on 18 rationales of refs@v1 (0 failed and 2 empty skipped)" in r.stderr


def test_sft_needs_exactly_one_dataset_of_the_right_kind(env: dict[str, Any], tmp_path: Path) -> None:
    r = train(["sft", "--help"])
    assert r.exit_code == 0 and "--rationales" in r.stdout and "--save-dtype" in r.stdout
    base = ["--store", env["store"], "sft", "--model", env["bpe"], "-o", tmp_path / "o"]
    for extra in ([], ["--corrections", "few", "--rationales", "refs"]):
        r = train([*base, *extra])
        assert r.exit_code == 1 and "exactly one dataset" in r.stderr, r.stderr
    r = train([*base, "--rationales", "few"])
    assert r.exit_code == 2 and "'few@v1' is a corrections dataset, but a rationales dataset" in r.stderr
    r = train([*base, "--corrections", "refs"])
    assert r.exit_code == 2 and "a corrections dataset is needed" in r.stderr
    s = Store(env["store"])
    blank = [{**row, "text": ""} for row in list(s.resolve("refs").load())[:3]]
    s.publish("blank", "rationales", blank, parents=[s.resolve("sqa")])
    r = train([*base, "--rationales", "blank"])
    assert r.exit_code == 1 and "blank@v1 has nothing to train on (0 failed, 3 empty rows)" in r.stderr
