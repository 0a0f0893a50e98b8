"""Where a PPO step's time goes: `torch.profiler` over the trainer's `train()` on a config-built model.

The PPO trainer is built as `ares-train ppo` builds it (`ares_train.ppo.run.build_trainer`, resumable
checkpoints off), then labelled from outside without touching its code: record_function ranges around the
buffer scoring (the no-grad passes), collate, the policy / value / reference forwards (module hooks),
backward, gradient clipping, the optimizer and the PPO arithmetic (`gae`, `ppo_loss`, ...). Backward ops are
attributed to the policy or the value model through the autograd sequence numbers of the forward ops that
made them. Host syncs are counted as `aten::_local_scalar_dense` (`.item()`, `.tolist()`, `float(t)`, bool
checks) and `aten::nonzero` (boolean indexing) events. Percentages are of the profiled `train()` time
(wall time of the main thread's ranges). On CUDA every labelled range ends with `torch.cuda.synchronize()`,
so its time includes its kernels (those added syncs cost a little), and the op table is by CUDA time.

    python bench/ppo_profile.py                      # CPU, ~100M Qwen2-shaped model
    python bench/ppo_profile.py --preset gpu-0.5b --dtype bfloat16 --mini-batch-size 16   # on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_perf  # noqa: E402
from ppo_throughput import parse as parse_common  # noqa: E402

ARITHMETIC = ("gae", "ppo_loss", "response_logprobs", "kl_per_token", "token_rewards", "masked_whiten")
SYNC_OPS = ("aten::_local_scalar_dense", "aten::nonzero")
BEHAVIOUR, SCORE = "behaviour (old + ref log-probs)", "score_buffer (values, rewards, GAE)"
NO_GRAD = {BEHAVIOUR: ("_behaviour",), SCORE: ("_score_buffer", "score_buffer")}
LABELS = frozenset(
    {
        *NO_GRAD,
        "collate",
        "backward",
        "clip_grad_norm",
        "optimizer",
        "policy.forward",
        "value.forward",
        "ref.forward",
        "train",
        *ARITHMETIC,
    }
)


def _settle() -> None:
    """Wait for queued kernels (CUDA), so a range's time includes the work it launched."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _ranged(fn: Any, label: str) -> Any:
    import torch

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _settle()
        with torch.profiler.record_function(label):
            result = fn(*args, **kwargs)
            _settle()
            return result

    return wrapper


def _hook_module(module: Any, label: str) -> None:
    import torch

    stack: list[Any] = []

    def pre(*_: Any) -> None:
        _settle()
        stack.append(torch.profiler.record_function(label).__enter__())

    def post(*_: Any) -> None:
        _settle()
        stack.pop().__exit__(None, None, None)

    module.register_forward_pre_hook(pre)
    module.register_forward_hook(post)


def label_trainer(trainer: Any) -> None:
    """Put record_function ranges on the trainer's parts (whatever of them this version has)."""
    import ares_train.ppo.trainer as module

    for name in ARITHMETIC:
        if callable(getattr(module, name, None)):
            setattr(module, name, _ranged(getattr(module, name), name))
    for label, names in NO_GRAD.items():
        for name in names:
            if hasattr(trainer, name):
                setattr(trainer, name, _ranged(getattr(trainer, name), label))
    trainer.collate = _ranged(trainer.collate, "collate")
    acc = trainer.accelerator
    acc.backward = _ranged(acc.backward, "backward")
    acc.clip_grad_norm_ = _ranged(acc.clip_grad_norm_, "clip_grad_norm")
    for name in ("step", "zero_grad"):
        setattr(trainer.optimizer, name, _ranged(getattr(trainer.optimizer, name), "optimizer"))
    wrapper = acc.unwrap_model(trainer.model)
    _hook_module(wrapper.policy, "policy.forward")
    _hook_module(wrapper.critic_backbone, "value.forward")  # TRL's wrapper calls the backbone, then .score
    if getattr(trainer, "ref_model", None) is not None:
        _hook_module(trainer.ref_model, "ref.forward")


def _span(ev: Any) -> tuple[float, float]:
    return ev.time_range.start, ev.time_range.end


def _containers(events: list[Any]) -> tuple[dict[int, Any], dict[int, Any]]:
    """For every event, the innermost labelled range around it (by time), and each labelled range's parent.

    Built from the time spans here rather than the profiler's cpu_parent links, which do not always nest
    ranges opened from module hooks."""
    inner: dict[int, Any] = {}
    parent: dict[int, Any] = {}
    stack: list[Any] = []
    for ev in sorted(events, key=lambda e: (e.time_range.start, -e.time_range.end)):
        start, end = _span(ev)
        while stack and _span(stack[-1])[1] <= start:
            stack.pop()
        top = stack[-1] if stack else None
        if ev.name in LABELS:
            parent[id(ev)] = top
            stack.append(ev)
        else:
            inner[id(ev)] = top
    return inner, parent


def _chain(ev: Any, parent: dict[int, Any]) -> list[str]:
    names = []
    while ev is not None:
        names.append(ev.name)
        ev = parent.get(id(ev))
    return names


def _no_grad(chain: list[str]) -> str:
    return "no-grad " if any(name in NO_GRAD for name in chain) else ""


def breakdown(events: list[Any], steps: int) -> dict[str, Any]:
    """Seconds per part (exclusive of nested labelled parts), backward split by model, syncs per step."""
    inner, parent = _containers(events)
    parts: dict[str, float] = defaultdict(float)
    for ev in events:
        if ev.name in LABELS:
            up = _chain(parent[id(ev)], parent)
            parts[_no_grad(up) + ev.name] += ev.time_range.elapsed_us() / 1e6
            if up:
                parts[_no_grad(up[1:]) + up[0]] -= ev.time_range.elapsed_us() / 1e6
    seq_owner: dict[int, str] = {}
    syncs: dict[str, int] = defaultdict(int)
    for ev in events:
        up = _chain(inner.get(id(ev)), parent) if ev.name not in LABELS else []
        if ev.name in SYNC_OPS:
            where = "optimizer: CPU step counters" if "optimizer" in up else "update"
            syncs[f"{ev.name} ({'no-grad passes' if _no_grad(up) else where})"] += 1
        if getattr(ev, "sequence_nr", -1) < 0 or _no_grad(up):
            continue
        if ev.name.startswith("autograd::engine::evaluate_function") and "backward" in up:
            seconds = ev.time_range.elapsed_us() / 1e6
            parts["backward: " + seq_owner.get(ev.sequence_nr, "other")] += seconds
            parts["backward"] -= seconds
        elif not ev.name.startswith("autograd::"):
            for model in ("policy.forward", "value.forward"):
                if model in up:
                    seq_owner.setdefault(ev.sequence_nr, model.split(".")[0])
    if "backward" in parts:
        parts["backward (rest)"] = max(parts.pop("backward"), 0.0)
    return {
        "seconds": dict(parts),
        "syncs": dict(syncs),
        "syncs_per_step": {k: v / max(steps, 1) for k, v in syncs.items()},
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--trace", type=Path, default=None, help="also write a Chrome trace here")
    ap.add_argument("--top", type=int, default=15, help="also print the N most expensive ops")
    own, rest = ap.parse_known_args(argv)
    a = parse_common(rest)
    import torch

    from ares_data.store import Store
    from ares_train.ppo.run import PPORunConfig, build_trainer

    model = train_perf.prepare(a)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = PPORunConfig(
            model=str(model),
            rationales="perf-rationales",
            scores="perf-scores",
            output_dir=tmp,
            mini_batch_size=a.mini_batch_size,
            ppo_epochs=a.ppo_epochs,
            dtype=a.dtype,
            forward_batch_size=a.forward_batch_size,
            save_checkpoints=False,
        )
        trainer = build_trainer(cfg, Store(a.work / "store"))[0]
        label_trainer(trainer)
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as prof:
            with torch.profiler.record_function("train"):
                history = trainer.train()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
    steps = int(history[-1]["step"]) if history else 0
    events = list(prof.events())
    result = breakdown(events, steps)
    total = sum(result["seconds"].values())
    result["total_s"], result["optimizer_steps"] = total, steps
    result["share"] = {
        k: round(100 * v / total, 1) for k, v in sorted(result["seconds"].items(), key=lambda kv: -kv[1])
    }
    result.update(train_perf.device_info(a.peak_tflops), preset=a.preset, label=a.label)
    print(json.dumps(result, indent=1))
    if own.top:
        sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=sort, row_limit=own.top))
    if own.trace is not None:
        with contextlib.suppress(RuntimeError):
            prof.export_chrome_trace(str(own.trace))
    if a.record is not None:
        with open(a.record, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
