"""PPO with sentence-level rewards: the loss against an independent computation, the buffer's log-probs
against unpadded forward passes, and real runs on tiny text / vision-language models through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ares_data.store import Store
from ares_train.ppo.algorithm import gae, kl_per_token, ppo_loss, token_rewards
from tests.helpers import train
from tests.ppo_fixtures import publish_round


# ---- the loss on a fixed mini-batch, against plain loops ------------------------------------------
def reference_loss(
    lp, ref, old, values, srew, lengths, new_lp, vpred, *, kl_coef, gamma, lam, clip, vclip, vf_coef
):
    """Straightforward PPO on python floats: rewards, GAE, whitening, clipped policy and value losses."""
    advs, rets = [], []
    for i, n in enumerate(lengths):
        r = [srew[i][t] - kl_coef * (lp[i][t] - ref[i][t]) for t in range(n)]
        a, nxt = [0.0] * n, 0.0
        for t in reversed(range(n)):
            next_v = values[i][t + 1] if t + 1 < n else 0.0
            nxt = r[t] + gamma * next_v - values[i][t] + gamma * lam * nxt
            a[t] = nxt
        advs.append(a)
        rets.append([a[t] + values[i][t] for t in range(n)])
    flat = [x for a in advs for x in a]
    mean = sum(flat) / len(flat)
    var = sum((x - mean) ** 2 for x in flat) / (len(flat) - 1)
    pg, vf, count = 0.0, 0.0, 0
    for i, n in enumerate(lengths):
        for t in range(n):
            adv = (advs[i][t] - mean) / math.sqrt(var + 1e-8)
            ratio = math.exp(new_lp[i][t] - old[i][t])
            clipped = min(max(ratio, 1 - clip), 1 + clip)
            pg += max(-adv * ratio, -adv * clipped)
            v_clipped = min(max(vpred[i][t], values[i][t] - vclip), values[i][t] + vclip)
            vf += max((vpred[i][t] - rets[i][t]) ** 2, (v_clipped - rets[i][t]) ** 2)
            count += 1
    return pg / count + vf_coef * 0.5 * vf / count


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8)])
def test_loss_matches_independent_computation(gamma: float, lam: float) -> None:
    g = torch.Generator().manual_seed(3)
    lengths, width = [5, 2, 4], 6
    mask = torch.tensor([[t < n for t in range(width)] for n in lengths])

    def rand(scale: float = 1.0) -> torch.Tensor:
        return torch.where(
            mask, torch.randn(len(lengths), width, generator=g, dtype=torch.float64) * scale, 0.0
        )

    lp, ref, values, vpred = rand(), rand(), rand(), rand()
    old = lp.clone()
    new_lp = lp + rand(0.3)  # ratios around 1, some beyond the clip range
    srew = torch.zeros_like(lp)
    srew[0, 1], srew[0, 4], srew[1, 1], srew[2, 3] = 0.4, -0.3, 0.5, 0.2
    kw = dict(kl_coef=0.05, gamma=gamma, lam=lam, clip=0.2, vclip=0.2, vf_coef=0.1)

    kl = kl_per_token(lp, ref)
    rewards = token_rewards(srew, kl, mask, kw["kl_coef"])
    adv, ret = gae(rewards, values, mask, gamma, lam)
    out = ppo_loss(
        new_lp, old, adv, vpred, values, ret, mask, cliprange=0.2, cliprange_value=0.2, vf_coef=0.1
    )
    want = reference_loss(
        *(x.tolist() for x in (lp, ref, old, values, srew)), lengths, new_lp.tolist(), vpred.tolist(), **kw
    )
    assert out.loss.item() == pytest.approx(want, abs=1e-5)
    assert 0 < out.pg_clipfrac.item() < 1  # the clip was exercised
    assert rewards[~mask].abs().sum() == 0 and adv[~mask].abs().sum() == 0


def test_rollouts_are_shared_equally_and_the_remainder_counted() -> None:
    from ares_data.errors import InputError
    from ares_train.ppo.trainer import share_rollouts

    rows = list(range(11))
    shares = [share_rollouts(rows, world=3, rank=r, seed=5) for r in range(3)]
    assert [len(mine) for mine, _ in shares] == [3, 3, 3] and {left for _, left in shares} == {2}
    used = [x for mine, _ in shares for x in mine]
    assert len(set(used)) == 9  # disjoint shares, the same shuffled order on every rank
    assert share_rollouts(rows, world=1, rank=0, seed=5) == (share_rollouts(rows, 1, 0, 5)[0], 0)
    with pytest.raises(InputError, match="3 rollouts cannot be shared by 4 processes"):
        share_rollouts(rows[:3], world=4, rank=0, seed=0)


# ---- real runs on tiny models -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ares_train.tiny import build_tiny_text_model

    return build_tiny_text_model(tmp_path_factory.mktemp("ppo-text") / "model")


@pytest.fixture(scope="module")
def vlm_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ares_train.tiny import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("ppo-vlm") / "model")


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors"))
    return {k: v for f in files for k, v in load_file(str(f)).items()}


def _ppo(store_dir: Path, model: Path, rat: str, sc: str, out: Path, *extra: str):
    return train(
        [
            "ppo",
            "--model",
            model,
            "--rationales",
            rat,
            "--scores",
            sc,
            "-o",
            out,
            "--ppo-epochs",
            "2",
            "--mini-batch-size",
            "4",
            "--lr",
            "1e-3",
            "--json",
            *extra,
        ]
    )


def test_buffer_logprobs_match_unpadded_forward(store_dir: Path, text_model: Path, tmp_path: Path) -> None:
    """Left-padded prompts + right-padded responses give the log-probs of one unpadded sequence at a time."""
    from ares_train.ppo.run import PPORunConfig, build_trainer

    rat, sc = publish_round(Store(store_dir), text_model, n_problems=3)
    cfg = PPORunConfig(
        model=str(text_model),
        rationales=rat.ref,
        scores=sc.ref,
        output_dir=str(tmp_path / "o"),
        forward_batch_size=4,
    )
    trainer, policy, data, _ = build_trainer(cfg, Store(store_dir))
    rows = trainer.rollouts  # this process's share, in the trainer's order
    assert len({r.prompt_ids.shape[0] for r in rows}) > 1 and len({r.response_ids.shape[0] for r in rows}) > 1
    trainer.behaviour = trainer._behaviour()
    buf = trainer._score_buffer(0, rows)
    device = next(policy.model.parameters()).device  # build_trainer moves the model to the accelerator
    for i, r in enumerate(rows):
        ids = torch.cat([r.prompt_ids, r.response_ids])[None].to(device)
        with torch.no_grad():
            logits = policy.model(input_ids=ids).logits[0, r.prompt_ids.shape[0] - 1 : -1]
        want = torch.log_softmax(logits.float(), -1).gather(-1, r.response_ids[:, None].to(device))[:, 0]
        n = r.response_ids.shape[0]
        assert torch.allclose(buf.logprobs[i, :n].cpu(), want.cpu(), atol=1e-5)
        # the reference is the initial policy
        assert torch.allclose(buf.ref_logprobs[i, :n].cpu(), want.cpu(), atol=1e-5)
        assert buf.sentence_rewards[i, :n].tolist() == pytest.approx(r.rewards.tolist())
        assert bool(buf.mask[i, :n].all()) and not bool(buf.mask[i, n:].any())


def test_eos_stripped_by_rollout_is_restored(store_dir: Path, text_model: Path) -> None:
    from ares_data.errors import UsageError
    from ares_train.modeling import load_policy
    from ares_train.ppo.data import load_rollouts

    store = Store(store_dir)
    rat, sc = publish_round(store, text_model, max_new_tokens=64, name="eos")
    policy = load_policy(text_model)
    with pytest.raises(UsageError, match="sampling parameters not recorded"):  # older rows: sampling unknown
        load_rollouts(store, rat, sc, policy)
    data = load_rollouts(store, rat, sc, policy, allow_off_policy=True)
    eos = policy.tokenizer.eos_token_id
    assert data.counts["eos_restored"] == data.counts["used"] == data.counts["off_distribution"] == 7
    for row, r in zip(
        rat.load().filter(lambda x: x["rationale_id"] != rat.load()[0]["rationale_id"]),
        data.rollouts,
        strict=True,
    ):
        assert r.response_ids.tolist() == [*row["token_ids"], eos] and r.rewards[-1] == 0
    capped, sc2 = publish_round(store, text_model, max_new_tokens=5, name="capped")  # hit the limit: no EOS
    assert load_rollouts(store, capped, sc2, policy, allow_off_policy=True).counts["eos_restored"] == 0


def test_a_changed_prompt_is_refused_unless_off_policy(store_dir: Path, text_model: Path) -> None:
    """The prompt ppo rebuilds must be the one rollout stored (a changed chat template = other prompts)."""
    from ares_data.errors import UsageError
    from ares_train.modeling import load_policy
    from ares_train.ppo.data import load_rollouts

    store = Store(store_dir)
    rat, sc = publish_round(store, text_model, name="tmpl")
    policy = load_policy(text_model)
    assert load_rollouts(store, rat, sc, policy).counts["prompt_mismatch"] == 0  # the fixture's prompts match
    problems = store.parent_chain(rat, "problems")
    rows = rat.load().to_list()
    changed = [{**r, "prompt": "<|old template|>" + r["prompt"]} for r in rows]
    old = store.publish("tmpl-old", "rationales", changed, parents=[problems])
    with pytest.raises(UsageError) as e:
        load_rollouts(store, old, sc, policy)
    msg = str(e.value)
    first_used = rows[1]  # the first row's scores failed: it is left out before the check
    assert first_used["rationale_id"] in msg and "--allow-off-policy" in e.value.hint
    assert repr(("<|old template|>" + first_used["prompt"])[:200]) in msg  # both prompts, 200 chars each
    assert repr(first_used["prompt"][:200]) in msg
    data = load_rollouts(store, old, sc, policy, allow_off_policy=True)
    assert data.counts["prompt_mismatch"] == data.counts["used"] == 7
    blank = store.publish("tmpl-blank", "rationales", [{**r, "prompt": ""} for r in rows], parents=[problems])
    data = load_rollouts(store, blank, sc, policy)  # imported rationales record no prompt: nothing to compare
    assert data.counts["prompt_mismatch"] == 0 and data.counts["used"] == 7


def test_ppo_text_model_trains_logs_and_saves(store_dir: Path, text_model: Path, tmp_path: Path) -> None:
    rat, sc = publish_round(Store(store_dir), text_model)
    out = tmp_path / "out"
    res = _ppo(
        store_dir, text_model, rat.ref, sc.ref, out, "--report-to", "tensorboard", "--micro-batch-size", "2"
    )
    assert res.exit_code == 0, res.output
    summary = res.json()
    assert summary["counts"] == {"rows": 8, "scores_failed": 1, "used": 7}
    log = [json.loads(line) for line in (out / "ppo_log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and summary["steps"] == 4
    for key in (
        "loss/total",
        "loss/policy",
        "loss/value",
        "reward/sentence",
        "objective/kl",
        "objective/kl_current",
    ):
        assert all(math.isfinite(entry[key]) for entry in log), key
    assert list(out.glob("runs/**/events.out.tfevents.*")), "tensorboard logs"
    before, after = _weights(text_model), _weights(out)
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    manifest = json.loads((out / "ares-checkpoint.json").read_text())
    assert manifest["stage"] == "ppo" and manifest["base_model"] == str(text_model)
    assert [d["ref"] for d in manifest["datasets"]] == [rat.ref, sc.ref]
    assert not (out / "checkpoint").exists()


def test_ppo_vlm_trains_with_images(store_dir: Path, vlm_model: Path, tmp_path: Path) -> None:
    from ares_train.modeling import load_policy
    from ares_train.ppo.data import load_rollouts

    store = Store(store_dir)
    rat, sc = publish_round(store, vlm_model, images=True)
    rolls = load_rollouts(store, rat, sc, load_policy(vlm_model)).rollouts
    assert any("pixel_values" in r.vision for r in rolls) and any(not r.vision for r in rolls)
    out = tmp_path / "out"
    res = _ppo(store_dir, vlm_model, rat.ref, sc.ref, out)
    assert res.exit_code == 0, res.output
    from ares_train.ppo.run import read_log

    assert [math.isfinite(e["loss/total"]) for e in read_log(out)] == [True, True]
    before, after = _weights(vlm_model), _weights(out)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any("language_model" in k for k in changed)


def test_ppo_lora_changes_only_the_adapter(store_dir: Path, text_model: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    rat, sc = publish_round(Store(store_dir), text_model)
    out = tmp_path / "lora"
    res = _ppo(store_dir, text_model, rat.ref, sc.ref, out, "--lora-r", "4", "--merge")
    assert res.exit_code == 0, res.output
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    base = AutoModelForCausalLM.from_pretrained(text_model)
    original = {k: v.clone() for k, v in base.state_dict().items()}
    model = PeftModel.from_pretrained(base, out)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # lora_B starts at zero: the adapter trained
    for name, tensor in model.get_base_model().state_dict().items():
        if "lora_" not in name:
            assert torch.equal(tensor, original[name.replace(".base_layer", "")]), name
    merged = _weights(out / "merged")
    assert any(not torch.equal(merged[k], original[k]) for k in merged if k in original)
    manifest = json.loads((out / "merged" / "ares-checkpoint.json").read_text())  # a checkpoint folder too
    assert manifest["stage"] == "ppo" and manifest["merged_from"] == str(out)
    assert manifest["weights_fingerprint"] != manifest["base_fingerprint"]


def test_off_policy_rationales_are_refused(store_dir: Path, text_model: Path, tmp_path: Path) -> None:
    rat, sc = publish_round(Store(store_dir), text_model, fingerprint="0" * 32, name="other")
    res = _ppo(store_dir, text_model, rat.ref, sc.ref, tmp_path / "x")
    assert res.exit_code == 2
    assert "not generated by the model being trained" in res.stderr and "--allow-off-policy" in res.stderr
    assert not (tmp_path / "x" / "ares-checkpoint.json").exists()
    res = _ppo(
        store_dir,
        text_model,
        rat.ref,
        sc.ref,
        tmp_path / "x",
        "--allow-off-policy",
        "--ref-model",
        text_model,
        "--value-model",
        text_model,
    )  # explicit reference and value models
    assert res.exit_code == 0, res.output
    assert res.json()["counts"]["off_policy"] == 7  # the row whose scores failed is left out first


def test_interrupted_run_resumes(store_dir: Path, text_model: Path, tmp_path: Path) -> None:
    from ares_train.ppo.run import PPORunConfig, read_log, run_ppo

    store = Store(store_dir)
    rat, sc = publish_round(store, text_model)
    cfg = PPORunConfig(
        model=str(text_model),
        rationales=rat.ref,
        scores=sc.ref,
        output_dir=str(tmp_path / "o"),
        ppo_epochs=3,
        mini_batch_size=4,
        lr=1e-3,
    )

    def crash(step: int, total: int) -> None:
        if step == 5:  # in the third PPO epoch, after two epochs were checkpointed
            raise KeyboardInterrupt

    (tmp_path / "o" / "merged").mkdir(parents=True)  # a finished earlier run in the same OUTDIR
    for folder in (tmp_path / "o", tmp_path / "o" / "merged"):
        (folder / "ares-checkpoint.json").write_text('{"stage": "ppo"}')
    with pytest.raises(KeyboardInterrupt):
        run_ppo(cfg, store, on_step=crash)
    assert (tmp_path / "o" / "checkpoint" / "progress.json").is_file()
    assert not list((tmp_path / "o").rglob("ares-checkpoint.json"))  # no manifest over weights being replaced
    assert [e["ppo_epoch"] for e in read_log(tmp_path / "o")] == [0, 1]
    import dataclasses

    from ares_data.errors import ConfigError

    with pytest.raises(ConfigError, match="other settings"):
        run_ppo(dataclasses.replace(cfg, lr=1e-4), store)
    res = run_ppo(cfg, store)
    assert res.resumed and [e["ppo_epoch"] for e in res.history] == [2] and res.history[0]["step"] == 6
    assert [e["ppo_epoch"] for e in read_log(tmp_path / "o")] == [0, 1, 2]


def test_crash_while_checkpointing_keeps_the_previous_checkpoint(
    store_dir: Path, text_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint is swapped in whole: a crash half-way through saving epoch 1 leaves epoch 0's intact."""
    import hashlib

    from ares_train.ppo.run import PPORunConfig, run_ppo

    store = Store(store_dir)
    rat, sc = publish_round(store, text_model)
    out = tmp_path / "o"
    cfg = PPORunConfig(model=str(text_model), rationales=rat.ref, scores=sc.ref, output_dir=str(out),
                       ppo_epochs=3, mini_batch_size=4, lr=1e-3)

    def state() -> dict[str, str]:
        folder = out / "checkpoint"
        return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in folder.iterdir() if f.is_file()}

    saved, real_save = [], torch.save

    def flaky_save(obj, f, *a, **kw):  # the buffer is written after the model/optimizer state
        if str(f).endswith("buffer-0.pt"):
            if len(saved) == 1:
                raise OSError("disk full")
            saved.append(1)
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", flaky_save)
    snapshot = {}

    def on_step(step: int, total: int) -> None:
        if step == 3:  # epoch 1 started: epoch 0's checkpoint is complete
            snapshot.update(state())

    with pytest.raises(OSError, match="disk full"):
        run_ppo(cfg, store, on_step=on_step)
    monkeypatch.setattr(torch, "save", real_save)
    assert snapshot and state() == snapshot
    assert json.loads((out / "checkpoint" / "progress.json").read_text())["ppo_epoch"] == 0
    res = run_ppo(cfg, store)
    assert res.resumed and [e["ppo_epoch"] for e in res.history] == [1, 2]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint")) == []


def test_ppo_help_and_config_errors(tmp_path: Path) -> None:
    res = train(["ppo", "--help"])
    assert res.exit_code == 0 and "--kl-coef" in res.stdout and "--allow-off-policy" in res.stdout
    cfg = tmp_path / "ppo.toml"
    cfg.write_text("[ppo]\nkl_coeff = 0.1\n")
    res = train(["ppo", "--config", cfg])
    assert res.exit_code != 0 and "kl_coeff" in res.stderr


def test_rollout_score_ppo_end_to_end_on_the_shipped_sample(
    store_dir: Path, text_model: Path, tmp_path: Path
):
    """ares-data ingest -> ares-train rollout -> ares-data score --teacher reference -> ares-train ppo."""
    from ares_data.sample import SAMPLE_DIR
    from tests.helpers import data

    assert data(["ingest", "scienceqa", SAMPLE_DIR, "-o", "sqa", "--json"]).exit_code == 0
    res = train(
        [
            "rollout",
            "--model",
            text_model,
            "--problems",
            "sqa",
            "--k",
            "2",
            "--limit",
            "4",
            "--max-new-tokens",
            "24",
            "-o",
            "roll",
            "--json",
        ]
    )
    assert res.exit_code == 0, res.output
    res = data(["score", "roll", "--teacher", "reference", "-o", "sc", "--json"])
    assert res.exit_code == 0 and res.json()["ok"] == 8, res.output
    out = tmp_path / "ppo"
    res = _ppo(store_dir, text_model, "roll", "sc", out)
    assert res.exit_code == 0, res.output
    assert res.json()["counts"]["used"] == 8 and (out / "model.safetensors").is_file()
    manifest = json.loads((out / "ares-checkpoint.json").read_text())
    assert [d["ref"] for d in manifest["datasets"]] == ["roll@v1", "sc@v1"]


def test_buffers_split_the_rollouts(store_dir: Path, text_model: Path, tmp_path: Path) -> None:
    from ares_train.ppo.run import PPORunConfig, run_ppo

    store = Store(store_dir)
    rat, sc = publish_round(store, text_model)
    cfg = PPORunConfig(
        model=str(text_model),
        rationales=rat.ref,
        scores=sc.ref,
        output_dir=str(tmp_path / "o"),
        ppo_epochs=1,
        mini_batch_size=2,
        buffer_size=3,
        save_checkpoints=False,
    )
    res = run_ppo(cfg, store)
    assert [(e["buffer"], e["step"]) for e in res.history] == [
        (0, 2),
        (1, 4),
        (2, 5),
    ]  # 7 rollouts: 3 + 3 + 1


def test_two_processes_share_the_rollouts(store_dir: Path, text_model: Path, tmp_path: Path) -> None:
    """torchrun with 2 CPU processes: one gloo DDP group, rollouts sharded, one log and one saved policy."""
    import os
    import subprocess
    import sys

    rat, sc = publish_round(Store(store_dir), text_model)
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "ares_train.cli",
        "ppo",
        "--model",
        str(text_model),
        "--rationales",
        rat.ref,
        "--scores",
        sc.ref,
        "-o",
        str(out),
        "--ppo-epochs",
        "2",
        "--mini-batch-size",
        "2",
        "--json",
    ]
    # CPU processes on every machine: two ranks cannot share one GPU under NCCL, and the test is about
    # sharding and one writer, not the device
    env = {**os.environ, "ARES_STORE": str(store_dir), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    steps = [
        json.loads(line.split(":")[1].rstrip(",")) for line in proc.stdout.splitlines() if '"steps"' in line
    ]
    assert steps == [4, 4]  # 7 rollouts -> 3 per process -> 2 mini-batches x 2 epochs (not 8 steps each)
    assert len((out / "ppo_log.jsonl").read_text().splitlines()) == 2
    assert (out / "model.safetensors").is_file() and (out / "ares-checkpoint.json").is_file()
    counts = json.loads((out / "ares-checkpoint.json").read_text())["counts"]
    assert counts["used"] == 6 and counts["uneven_remainder"] == 1  # the 7th rollout is counted, not lost
