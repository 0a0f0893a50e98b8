"""Rollout throughput: generated tokens/s of `run_rollout` at several batch sizes (same model, same prompts).

    python bench/rollout.py [--hidden 256 --layers 4 --problems 16 --k 4 --max-new-tokens 48]
                            [--batch-sizes 1,8,32]

Builds a random Qwen2-style model from a config (hidden/layers as given, tokenizer trained in-process),
ingests the shipped ScienceQA-format sample into a temporary store and times the library call the CLI makes
(model load, generation, segmentation, publishing), once per batch size, with a different output name each
time so nothing is reused. Tokens counted are the stored response tokens (EOS excluded). A tiny LLaVA-style
VLM run on the same problems (images through the processor) is reported too.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.helpers when run from a checkout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-sizes", default="1,8,32")
    args = ap.parse_args()

    import torch

    from ares_data.sample import SAMPLE_DIR
    from ares_data.store import Store
    from ares_train.modeling import load_policy
    from ares_train.rollout import RolloutConfig, run_rollout
    from ares_train.tiny import build_tiny_text_model, build_tiny_vlm
    from tests.helpers import data

    root = Path(tempfile.mkdtemp(prefix="ares-bench-rollout-"))
    ingest = data(["--store", str(root / "store"), "ingest", "scienceqa", str(SAMPLE_DIR), "-o", "sqa"])
    assert ingest.exit_code == 0, ingest.output
    store = Store(root / "store")
    text = build_tiny_text_model(root / "text", hidden_size=args.hidden, num_layers=args.layers)
    vlm = build_tiny_vlm(root / "vlm")
    params = sum(p.numel() for p in load_policy(text).model.parameters())
    print(f"text model: hidden {args.hidden}, {args.layers} layers, {params / 1e6:.2f}M parameters; "
          f"{args.problems} problems x k={args.k}, max_new_tokens={args.max_new_tokens}, "
          f"torch threads {torch.get_num_threads()}")
    print("| model | batch size | rationales | tokens | seconds | tokens/s |\n|---|---|---|---|---|---|")
    runs = [("text", text, int(b)) for b in args.batch_sizes.split(",")] + [("vlm (LLaVA-tiny)", vlm, 16)]
    for i, (label, model, batch) in enumerate(runs):
        cfg = RolloutConfig(model=str(model), problems="sqa", output=f"r{i}", k=args.k, limit=args.problems,
                            max_new_tokens=args.max_new_tokens, batch_size=batch, seed=1)
        t0 = time.perf_counter()
        version = run_rollout(store, cfg)
        dt = time.perf_counter() - t0
        tokens = sum(len(ids) for ids in version.load()["token_ids"])
        print(f"| {label} | {batch} | {version.manifest['rows']} | {tokens} | {dt:.2f} | {tokens / dt:.0f} |")


if __name__ == "__main__":
    main()
