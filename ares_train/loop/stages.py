"""One function per loop stage. Each takes the run context and the stage's inputs and returns
(outputs, metrics); every output is a versioned dataset ref or a checkpoint folder with a manifest.

Teacher stages call ares_data's request engine in-process, with the store's request cache, so a stage
that is run again (after a crash, or on an identical rerun) re-sends nothing that was answered before, and a
finished teacher dataset with the same build key is reused without touching the engine at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ares_data.store import Store, Version

from .config import LoopSettings

Progress = Callable[[int, int | None], None]


@dataclass
class Context:
    store: Store
    settings: LoopSettings
    run_dir: Path
    prefix: str
    progress: Progress | None = None
    budget_left: float | None = None  # USD the teacher may still spend in this invocation (None: no limit)

    def tick(self, done: int, total: int | None) -> None:
        if self.progress is not None:
            self.progress(done, total)


def sft_config_class() -> type:
    from ..sft import SFTConfig

    return SFTConfig


# ---- rollout ----------------------------------------------------------------------------------------
def rollout(ctx: Context, model: str, round_: int, step: int, k: int | None = None) -> tuple[dict, dict]:
    from ..rollout import RolloutConfig, run_rollout

    loop = ctx.settings.loop
    values = {**ctx.settings.rollout, "model": model, "problems": loop.problems,
              "output": f"{ctx.prefix}-rationales", "round": round_, "split": loop.split,
              "limit": loop.limit, "seed": loop.seed + 1000 * round_ + step}
    if k:
        values["k"] = k
    cfg = RolloutConfig(**values)
    cfg.validate()
    version = run_rollout(ctx.store, cfg, progress=ctx.tick)
    texts = version.load()["text"]
    return ({"rationales": version.ref},
            {"rows": len(texts), "mean_chars": round(sum(map(len, texts)) / max(1, len(texts)), 1),
             "reused": version.reused})


# ---- teacher (score / correct) -------------------------------------------------------------------------
def _task(ctx: Context, task_name: str) -> Any:
    from ares_data.tasks import TASKS

    loop = ctx.settings.loop
    prompt = loop.score_prompt if task_name == "score" else loop.correct_prompt
    return TASKS[task_name](prompt_path=Path(prompt) if prompt else None, include_images=loop.images,
                            max_tokens=loop.max_tokens)


def teacher_stage(ctx: Context, task_name: str, rationales_ref: str) -> tuple[dict, dict]:
    """Score or correct a rationales dataset through ares_data's publish step (the one `ares-data
    score/correct` use, so identical builds are the same version); publish `<prefix>-scores|corrections`."""
    from ares_data.engine import Stats
    from ares_data.engine.inputs import TeacherInputs
    from ares_data.engine.stage import find_teacher_dataset, publish_teacher_dataset
    from ares_data.teachers import make_teacher

    loop, store = ctx.settings.loop, ctx.store
    task = _task(ctx, task_name)
    inputs = TeacherInputs.resolve(store, rationales_ref, None, task.kind)
    name = f"{ctx.prefix}-{task.kind}"
    teacher = make_teacher(loop.teacher, base_url=loop.teacher_base_url or None, timeout=loop.timeout)
    found = find_teacher_dataset(store, inputs, task_name, task, teacher.spec, name,
                                 scope=teacher.cache_scope)
    if found is not None:
        asyncio.run(teacher.aclose())
        return {task.kind: found.ref}, {**_teacher_metrics(found), "reused": True}
    stats = Stats(total=len(inputs))
    engine = {"concurrency": loop.concurrency, "rpm": loop.rpm, "tpm": loop.tpm, "timeout": loop.timeout,
              "max_attempts": loop.max_attempts, "max_cost": ctx.budget_left}
    version, _ = asyncio.run(publish_teacher_dataset(
        store, inputs, task_name, task, teacher, name=name, engine=engine, extra={"loop": str(ctx.run_dir)},
        stats=stats, on_progress=lambda s: ctx.tick(s.done, s.total)))
    metrics = _teacher_metrics(version)
    metrics.update(sent=stats.sent, from_cache=stats.from_cache, spent_usd=round(stats.spent_usd, 6),
                   reused=version.reused)
    return {task.kind: version.ref}, metrics


def _teacher_metrics(version: Version) -> dict[str, Any]:
    ds = version.load()
    ok = [i for i, s in enumerate(ds["status"]) if s == "ok"]
    out: dict[str, Any] = {"ok": len(ok), "failed": len(ds) - len(ok),
                           "cost_usd": version.manifest.get("cost_usd", 0.0)}
    if version.kind == "scores":
        per = [sum(x) / len(x) for x in (ds[i]["scores"] for i in ok) if x]
        out["mean_score"] = round(sum(per) / len(per), 4) if per else None
    else:
        for key in ("kept", "edited", "added", "removed"):
            out[key] = int(sum(ds[i][key] for i in ok))
    return out


# ---- training --------------------------------------------------------------------------------------
def _finished_checkpoint(outdir: Path, datasets: list[str], store: Store) -> dict | None:
    """The checkpoint manifest when `outdir` already holds a finished checkpoint trained on `datasets`."""
    from ..checkpoint import read_checkpoint_manifest

    manifest = read_checkpoint_manifest(outdir)
    if manifest is None:
        return None
    have = {d.get("fingerprint") for d in manifest.get("datasets") or []}
    return manifest if all(store.resolve(ref).fingerprint in have for ref in datasets) else None


def ppo(ctx: Context, model: str, rationales: str, scores: str, outdir: Path, *,
        ref_model: str | None = None, value_model: str | None = None) -> tuple[dict, dict]:
    """PPO from `model` with the KL taken against `ref_model` (the loop's starting model, unless [ppo]
    names one) and the critic carried over from the previous PPO stage (`value_model`, its OUTDIR/value)."""
    from ..ppo.run import VALUE_DIR, PPORunConfig, run_ppo

    out, metrics = _rl_stage(ctx, PPORunConfig, run_ppo, ctx.settings.ppo, model, rationales, scores, outdir,
                             {"ref_model": ref_model, "value_model": value_model})
    if (outdir / VALUE_DIR).is_dir():
        out["value_model"] = str(outdir / VALUE_DIR)
    return out, metrics


def grpo(ctx: Context, model: str, rationales: str, scores: str, outdir: Path, *,
         ref_model: str | None = None) -> tuple[dict, dict]:
    """GRPO (no critic) from `model` with the KL taken against `ref_model` (the loop's starting model,
    unless [grpo] names one)."""
    from ..ppo.grpo_config import GRPORunConfig
    from ..ppo.grpo_run import run_grpo

    return _rl_stage(ctx, GRPORunConfig, run_grpo, ctx.settings.grpo, model, rationales, scores, outdir,
                     {"ref_model": ref_model})


def _rl_stage(ctx: Context, cls: type, run: Callable[..., Any], table: dict[str, Any], model: str,
              rationales: str, scores: str, outdir: Path, defaults: dict[str, Any]) -> tuple[dict, dict]:
    """Train with `run(cls(...))` unless `outdir` already holds the finished checkpoint; the stage's table
    overrides `defaults`, the loop sets the model, datasets and folder."""
    done = _finished_checkpoint(outdir, [rationales, scores], ctx.store)
    if done is None:
        values = {**defaults, **table}
        values.update(model=model, rationales=rationales, scores=scores, output_dir=str(outdir))
        cfg = cls(**values)
        cfg.validate()
        run(cfg, ctx.store, on_step=ctx.tick)
        done = _finished_checkpoint(outdir, [rationales, scores], ctx.store) or {}
    metrics = {k: v for k, v in (done.get("final_metrics") or {}).items() if isinstance(v, (int, float))}
    metrics["reference"] = (done.get("reference") or {}).get("model")
    return {"model": str(outdir)}, {**metrics, "weights_fingerprint": done.get("weights_fingerprint")}


def sft(ctx: Context, model: str, corrections: str, outdir: Path) -> tuple[dict, dict]:
    from ..sft import SFTConfig, run_sft

    done = _finished_checkpoint(outdir, [corrections], ctx.store)
    if done is None:
        resume = outdir.is_dir() and any(outdir.glob("checkpoint-*"))  # killed mid-training: continue
        cfg = SFTConfig(**{**ctx.settings.sft, "model": model, "corrections": corrections,
                           "output_dir": str(outdir), "resume": resume})
        cfg.validate()
        run_sft(ctx.store, cfg, progress=ctx.tick)
        done = _finished_checkpoint(outdir, [corrections], ctx.store) or {}
    metrics = {"train_loss": done.get("train_loss"), "steps": done.get("global_step")}
    return {"model": str(outdir)}, {**metrics, "weights_fingerprint": done.get("weights_fingerprint")}


# ---- evaluation ------------------------------------------------------------------------------------
def evaluate(ctx: Context, model: str) -> tuple[dict, dict]:
    from ..eval import EvalOptions, run_eval

    loop = ctx.settings.loop
    opts = EvalOptions(**{**ctx.settings.eval, "split": loop.eval_split})
    version, summary = run_eval(ctx.store, model, loop.problems, f"{ctx.prefix}-eval", opts,
                                on_progress=ctx.tick)
    return {"eval": version.ref}, {"accuracy": summary["overall"]["accuracy"], "n": summary["overall"]["n"],
                                   "unparsed": summary["unparsed"]}
