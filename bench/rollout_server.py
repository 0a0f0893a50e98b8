"""Rollout tokens/s: in-process `generate` vs `--engine server` (transformers serve), same prompts and limits.

    python bench/rollout_server.py [--hidden 256 --layers 4 --problems 16 --k 4 --max-new-tokens 48]
                                   [--batch-sizes 16,64] [--concurrency 1,4,16] [--continuous-batching]

Builds a random Qwen2-style model from a config, ingests the shipped ScienceQA-format sample into a temporary
store and times `run_rollout` (the library call the CLI makes) on the same problems, k and max_new_tokens:

- in-process at each batch size, prompts sorted by length (the default) and in dataset order (the order
  before sorting was added), with the left-padding tokens each order costs (after one untimed warm-up
  rollout: the first generate call of a process pays one-off costs);
- through `transformers serve` started once on the checkpoint (startup timed separately; its own CPU time
  read from /proc), at each client concurrency; the server's generation_config pinned like --serve-cmd does.

Wall time on a shared machine is noisy: the script prints the load average before and after, and the CPU
seconds of this process (and of the server) next to each wall time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.helpers when run from a checkout


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its children (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _timed(store: Any, cfg: Any, server_pid: int | None = None) -> tuple[Any, float, float, float]:
    from ares_train.rollout import run_rollout

    cpu0, srv0, t0 = time.process_time(), _proc_cpu(server_pid) if server_pid else 0.0, time.perf_counter()
    version = run_rollout(store, cfg)
    wall = time.perf_counter() - t0
    return version, wall, time.process_time() - cpu0, (_proc_cpu(server_pid) - srv0) if server_pid else 0.0


def _padding(policy: Any, problems: Any, order: list[int], k: int, batch: int) -> int:
    """Left-padding tokens of the prompt batches in `order` (each problem repeated k times)."""
    from ares_train.prompting import render_prompt

    lengths = [
        len(policy.tokenizer(render_prompt(policy, problems[i]), add_special_tokens=False)["input_ids"])
        for i in order
        for _ in range(k)
    ]
    return sum(
        max(chunk) * len(chunk) - sum(chunk)
        for chunk in (lengths[i : i + batch] for i in range(0, len(lengths), batch))
    )


def _row(label: str, version: Any, wall: float, cpu: float, server_cpu: float, extra: str = "") -> str:
    # sampled tokens: the server's count where it reports one (re-tokenized text can have more tokens)
    tokens = version.manifest.get("counts", {}).get("completion_tokens") or sum(
        len(ids) for ids in version.load()["token_ids"]
    )
    return (
        f"| {label} | {version.manifest['rows']} | {tokens} | {wall:.2f} | {tokens / wall:.0f} | {cpu:.1f} "
        f"| {server_cpu:.1f} | {extra} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-sizes", default="16,64")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--continuous-batching", action="store_true", help="start transformers serve with it")
    args = ap.parse_args()

    import torch

    import ares_train.rollout as rollout_mod
    from ares_data.sample import SAMPLE_DIR
    from ares_data.store import Store
    from ares_train.modeling import load_policy
    from ares_train.rollout import RolloutConfig, select_problems
    from ares_train.tiny import build_tiny_text_model
    from tests.helpers import data

    root = Path(tempfile.mkdtemp(prefix="ares-bench-rollout-server-"))
    assert (
        data(["--store", str(root / "store"), "ingest", "scienceqa", str(SAMPLE_DIR), "-o", "sqa"]).exit_code
        == 0
    )
    store = Store(root / "store")
    model = build_tiny_text_model(root / "policy", hidden_size=args.hidden, num_layers=args.layers)
    policy = load_policy(model)
    params = sum(p.numel() for p in policy.model.parameters())
    problems = select_problems(store.resolve("sqa"), "train", args.problems, with_images=False)
    print(
        f"model: hidden {args.hidden}, {args.layers} layers, {params / 1e6:.2f}M parameters; {args.problems} "
        f"problems x k={args.k}, max_new_tokens={args.max_new_tokens}; "
        f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, "
        f"load average before {os.getloadavg()[0]:.2f}"
    )
    print(
        "| engine | rows | tokens | seconds | tokens/s | client CPU s | server CPU s | notes |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    base = dict(
        model=str(model),
        problems="sqa",
        k=args.k,
        limit=args.problems,
        max_new_tokens=args.max_new_tokens,
        seed=1,
    )
    sorted_order = rollout_mod.prompt_order
    _timed(store, RolloutConfig(**{**base, "limit": 2}, output="warmup"))  # first-call costs, not timed
    runs = 0
    for batch in (int(b) for b in args.batch_sizes.split(",") if b):  # --batch-sizes "": server only
        for label, order in (("sorted", sorted_order), ("dataset order", None)):
            rollout_mod.prompt_order = order or (lambda _policy, rows: list(range(len(rows))))
            pad = _padding(policy, problems, rollout_mod.prompt_order(policy, problems), args.k, batch)
            runs += 1
            cfg = RolloutConfig(**base, output=f"r{runs}", batch_size=batch)
            print(
                _row(f"in-process, batch {batch}, {label}", *_timed(store, cfg), f"{pad} padding tokens"),
                flush=True,
            )
    rollout_mod.prompt_order = sorted_order
    if args.concurrency:
        _serve(args, store, model, base, runs)
    print(f"load average after {os.getloadavg()[0]:.2f}")


def _serve(args: Any, store: Any, model: Path, base: dict[str, Any], runs: int) -> None:
    from ares_train.rollout import RolloutConfig
    from ares_train.serving.launch import served_checkpoint

    serve = "transformers serve {model} --port {port} --device cpu" + (
        " --continuous-batching" if args.continuous_batching else ""
    )
    t0 = time.perf_counter()
    with served_checkpoint(serve, model) as served:
        startup = time.perf_counter() - t0
        for conc in (int(c) for c in args.concurrency.split(",") if c):
            runs += 1
            cfg = RolloutConfig(
                **base,
                output=f"r{runs}",
                engine="server",
                base_url=served.base_url,
                served_model=served.model_id,
                concurrency=conc,
            )
            print(
                _row(
                    f"server (transformers serve{', CB' if args.continuous_batching else ''}), concurrency "
                    f"{conc}",
                    *_timed(store, cfg, served.pid),
                    f"startup {startup:.1f} s not included",
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
