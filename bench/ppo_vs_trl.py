"""One RL round, ours (rollout + ppo, teacher time excluded) vs TRL's own PPOTrainer, side by side.

Both sides start from the same tiny causal LM (saved to disk), the same prompts (the shipped ScienceQA
sample, rendered by ares_train.prompting), the same samples per prompt, response length, PPO epochs and
mini-batches, and both load their models from disk, train and save inside the timed region:

- ours:  `run_rollout` (k samples per prompt, one generate batch) -> [reference teacher scores, NOT timed]
          -> `run_ppo` (one buffer, E epochs x M mini-batches, no resumable checkpoints);
- TRL:   `trl.experimental.ppo.PPOTrainer` with a value model from the policy, a frozen reference copy and a
          tiny reward model built from a config; it generates and updates in one loop (one update).

The two are alternated `--repeats` times; the medians and their ratio are printed (the ratio is what counts
on a shared machine). `--memory` also measures peak RSS of a LoRA PPO run with the adapter-disabled
reference against the same run with a separately loaded `--ref-model`, each in its own process, on a
larger model built from a config.

    python bench/ppo_vs_trl.py                       # timing, defaults below
    python bench/ppo_vs_trl.py --memory --repeats 0  # memory only
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _cli(app_module: str, args: list[str]) -> dict[str, Any]:
    """Run an ares-data / ares-train command in-process, returning its --json output."""
    import importlib

    from ares_data.cli import run_app

    app = importlib.import_module(app_module).app
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = run_app(app, [str(a) for a in args] + ["--json"])
    if code != 0:
        raise SystemExit(f"{app_module} {args} failed with exit code {code}")
    return json.loads(out.getvalue())


def setup(work: Path, hidden: int, layers: int) -> tuple[Path, str]:
    from ares_data.sample import SAMPLE_DIR

    os.environ["ARES_STORE"] = str(work / "store")
    model = build_model(work / "model", hidden, layers)
    _cli("ares_data.cli", ["ingest", "scienceqa", SAMPLE_DIR, "-o", "sqa"])
    return model, "sqa"


def build_model(out: Path, hidden: int, layers: int) -> Path:
    """The tiny Qwen2-style model of ares_train.tiny, or a wider/deeper one of the same family."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from ares_train.tiny import build_tiny_text_model, train_tokenizer

    if hidden == 64 and layers == 2:
        return build_tiny_text_model(out)
    tok = train_tokenizer(None, "bpe", 512)
    cfg = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def ours(model: Path, problems: str, a: argparse.Namespace, run: int, work: Path) -> dict[str, float]:
    from ares_data.store import Store
    from ares_train.ppo.run import PPORunConfig, run_ppo
    from ares_train.rollout import RolloutConfig, run_rollout

    store = Store(work / "store")
    n = a.prompts * a.k
    c0, t0 = _cpu(), time.perf_counter()
    roll = run_rollout(
        store,
        RolloutConfig(
            model=str(model),
            problems=problems,
            output=f"roll{run}",
            k=a.k,
            max_new_tokens=a.response_length,
            temperature=1.0,
            batch_size=n,
            limit=a.prompts,
            split="all",
            seed=run,
        ),
    )
    c1, t1 = _cpu(), time.perf_counter()
    scores = _cli("ares_data.cli", ["score", roll.ref, "--teacher", "reference", "-o", f"sc{run}"])["ref"]
    c2, t2 = _cpu(), time.perf_counter()
    cfg = PPORunConfig(
        model=str(model),
        rationales=roll.ref,
        scores=scores,
        output_dir=str(work / f"ours{run}"),
        ppo_epochs=a.ppo_epochs,
        mini_batch_size=n // a.mini_batches,
        forward_batch_size=n,
        lr=3e-6,
        save_checkpoints=a.checkpoints,
        kl_coef=0.05,
    )
    res = run_ppo(cfg, store)
    c3, t3 = _cpu(), time.perf_counter()
    lengths = [len(r) for r in roll.load()["token_ids"]]
    return {
        "total_s": (t1 - t0) + (t3 - t2),
        "cpu_s": (c1 - c0) + (c3 - c2),
        "rollout_s": t1 - t0,
        "ppo_s": t3 - t2,
        "teacher_s": t2 - t1,
        "rollouts": res.counts.get("used", 0),
        "optimizer_steps": res.history[-1]["step"],
        "mean_response_tokens": statistics.mean(lengths),
    }


def trl_round(model: Path, problems: str, a: argparse.Namespace, run: int, work: Path) -> dict[str, float]:
    import torch
    from datasets import Dataset
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    from ares_data.store import Store
    from ares_train.modeling import load_policy
    from ares_train.ppo.run import resolve_optim
    from ares_train.ppo.trl_base import PPOConfig, PPOTrainer
    from ares_train.prompting import render_prompt

    rows = list(Store(work / "store").resolve(problems).load().select(range(a.prompts)))
    n = a.prompts * a.k
    rendering = load_policy(model)
    prompts = [render_prompt(rendering, p) for p in rows]  # exactly the prompts our rollout uses
    del rendering
    c0, t0 = _cpu(), time.perf_counter()
    tok = AutoTokenizer.from_pretrained(model)
    policy = AutoModelForCausalLM.from_pretrained(model)
    ref = AutoModelForCausalLM.from_pretrained(model)
    value = AutoModelForSequenceClassification.from_pretrained(model, num_labels=1)
    torch.manual_seed(run)
    reward = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(model, num_labels=1))
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts for _ in range(a.k)]
    args = PPOConfig(
        output_dir=str(work / f"trl{run}"),
        # batch n, M mini-batches of n/M, one forward/backward and one optimizer step each, as ours does
        # (TRL steps the optimizer every gradient_accumulation_steps micro-batches, across mini-batches)
        per_device_train_batch_size=n,
        gradient_accumulation_steps=1,
        num_mini_batches=a.mini_batches,
        num_ppo_epochs=a.ppo_epochs,
        response_length=a.response_length,
        total_episodes=n,
        local_rollout_forward_batch_size=n,
        temperature=1.0,
        stop_token="eos",
        num_sample_generations=0,
        report_to=[],
        bf16=False,
        learning_rate=3e-6,
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=run,
        kl_coef=0.05,
        optim=resolve_optim("auto"),  # the optimizer ours uses (same kernel on both sides)
    )
    trainer = PPOTrainer(
        args=args,
        processing_class=tok,
        model=policy,
        ref_model=ref,
        reward_model=reward,
        train_dataset=Dataset.from_dict({"input_ids": ids}),
        value_model=value,
    )
    steps = [0]
    inner = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # real steps only (not skipped ones)
    inner.register_step_post_hook(lambda *_: steps.__setitem__(0, steps[0] + 1))
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.train()
    trainer.save_model(str(work / f"trl{run}"))
    return {"total_s": time.perf_counter() - t0, "cpu_s": _cpu() - c0, "optimizer_steps": steps[0]}


def _cpu() -> float:
    """CPU seconds of this process (all threads): less sensitive than wall time to other users' load."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timing(a: argparse.Namespace) -> dict[str, Any]:
    import warnings

    import torch

    warnings.simplefilter("ignore", FutureWarning)
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, problems = setup(work, a.hidden, a.layers)
        trl_round(model, problems, a, 999, work)  # warm-up both (imports, kernels)
        ours(model, problems, a, 999, work)
        res: dict[str, list[dict[str, float]]] = {"ours": [], "trl": []}
        for r in range(a.repeats):
            order = [("ours", ours), ("trl", trl_round)]
            for name, fn in order if r % 2 == 0 else order[::-1]:
                res[name].append(fn(model, problems, a, r, work))
    med = {k: statistics.median(x["total_s"] for x in v) for k, v in res.items()}
    cpu = {k: statistics.median(x["cpu_s"] for x in v) for k, v in res.items()}
    return {
        "runs": res,
        "median_wall_s": med,
        "median_cpu_s": cpu,
        "ratio_ours_over_trl_wall": med["ours"] / med["trl"],
        "ratio_ours_over_trl_cpu": cpu["ours"] / cpu["trl"],
    }


def _rss_mib(field: str) -> float:
    """VmRSS / VmHWM of this process from /proc (MiB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_child(a: argparse.Namespace) -> None:
    """One LoRA PPO (shared or separate reference): peak RSS of the whole process, and the peak while
    training (the high-water mark is reset once all models are loaded, so transient loading buffers and
    allocator noise from start-up do not decide the comparison)."""
    from ares_data.store import Store
    from ares_train.ppo.run import PPORunConfig, build_trainer

    work = Path(a.work)
    cfg = PPORunConfig(
        model=str(work / "model"),
        rationales="mroll",
        scores="msc",
        output_dir=str(work / f"out-{a.memory_child}"),
        ppo_epochs=1,
        mini_batch_size=4,
        forward_batch_size=8,
        lora_r=8,
        save_checkpoints=False,
        ref_model=str(work / "model") if a.memory_child == "separate" else None,
    )
    trainer, *_ = build_trainer(cfg, Store(work / "store"))
    loaded = _rss_mib("VmRSS")
    peak_loading = _rss_mib("VmHWM")
    Path("/proc/self/clear_refs").write_text("5")  # reset the RSS high-water mark
    trainer.train()
    print(
        json.dumps(
            {
                "rss_after_loading_mib": loaded,
                "peak_rss_loading_mib": peak_loading,
                "peak_rss_training_mib": _rss_mib("VmHWM"),
            }
        )
    )


def memory(a: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, problems = setup(work, a.mem_hidden, a.mem_layers)
        _cli(
            "ares_train.cli",
            [
                "rollout",
                "--model",
                model,
                "--problems",
                problems,
                "--k",
                "2",
                "--limit",
                "4",
                "--max-new-tokens",
                "32",
                "--split",
                "all",
                "-o",
                "mroll",
            ],
        )
        _cli("ares_data.cli", ["score", "mroll", "--teacher", "reference", "-o", "msc"])
        params = sum(p.stat().st_size for p in model.glob("*.safetensors")) / 2**20
        out: dict[str, Any] = {"model_file_mib": round(params, 1)}
        for mode in ("shared", "separate"):
            env = {**os.environ, "ARES_STORE": str(work / "store")}
            proc = subprocess.run(
                [sys.executable, __file__, "--memory-child", mode, "--work", str(work)],
                capture_output=True,
                text=True,
                env=env,
            )
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-3000:])
            child = json.loads(proc.stdout.strip().splitlines()[-1])
            out[f"{mode}_reference"] = {k: round(v, 1) for k, v in child.items()}
    return out


def alignment() -> dict[str, Any]:
    """ms per rationale to find token spans from stored ids: windowed decoding vs decoding every prefix."""
    import random

    from ares_train.ppo.rewards import prefix_ends, spans_from_ids
    from ares_train.tiny import train_tokenizer

    words = (
        "the sun is hot . magnets repel when like poles face so the answer is ( A ) café naïve 40°C".split()
    )
    text = " ".join(random.Random(0).choice(words) for _ in range(600))
    out: dict[str, Any] = {}
    for kind in ("bpe", "sentencepiece"):
        tok = train_tokenizer(None, kind, 512)
        for n in (256, 512):
            ids = tok(text, add_special_tokens=False).input_ids[:n]
            full = tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            for name, fn in (("windowed", spans_from_ids), ("every_prefix", prefix_ends)):
                t0 = time.perf_counter()
                for _ in range(10):
                    fn(tok, ids, full)
                out[f"{kind}_{n}_tokens_{name}_ms"] = round((time.perf_counter() - t0) / 10 * 1000, 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--k", type=int, default=2, help="samples per prompt")
    p.add_argument("--response-length", type=int, default=32)
    p.add_argument("--ppo-epochs", type=int, default=4)
    p.add_argument("--mini-batches", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is least disturbed by other load)"
    )
    p.add_argument(
        "--checkpoints", action="store_true", help="ours also writes a resumable checkpoint per epoch"
    )
    p.add_argument("--memory", action="store_true", help="also measure LoRA peak RSS, shared vs separate ref")
    p.add_argument("--mem-hidden", type=int, default=768)
    p.add_argument("--mem-layers", type=int, default=8)
    p.add_argument("--alignment", action="store_true", help="also time the reward alignment (ms/rationale)")
    p.add_argument("--memory-child", choices=["shared", "separate"], help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.memory_child:
        memory_child(a)
        return
    report: dict[str, Any] = {
        "settings": {k: v for k, v in vars(a).items() if k not in ("memory_child", "work")}
    }
    if a.repeats:
        report["timing"] = timing(a)
    if a.memory:
        report["memory"] = memory(a)
    if a.alignment:
        report["alignment"] = alignment()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
