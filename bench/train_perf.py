"""Shared set-up and measurement for the PPO/SFT throughput and profile benchmarks (issue 14).

- `build_model(out, preset)`: a random Qwen2-shaped model built from a config (no download), cached on disk.
  `cpu-100m` (~98M parameters: hidden 768, 12 layers, vocab 32,768) is the CPU model; `gpu-0.5b` has
  Qwen2-0.5B's shape (~494M: hidden 896, 24 layers, vocab 151,936); `tiny` is for smoke runs. The tokenizer is
  the small BPE of `ares_train.tiny`; the embedding/LM head has the preset's full vocabulary (as real models
  have more rows than any one text uses), so the log-softmax costs what it costs on a real vocabulary.
- `build_data(work, model, ...)`: the shipped ScienceQA sample as problems, k "rollouts" per problem whose
  responses are sample sentences concatenated to a random length around `response_tokens` (real token ids,
  the model's fingerprint, prompts as `ares-train rollout` renders them), random sentence scores, and the
  same texts as corrections for SFT. Published once per work folder.
- `Meter`: wall and CPU time, peak memory (RSS; CUDA max allocated), GPU utilisation sampled in a thread.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(hidden=64, layers=2, intermediate=128, heads=4, kv_heads=2, vocab=512),
    "cpu-100m": dict(hidden=768, layers=12, intermediate=2048, heads=12, kv_heads=2, vocab=32768),
    "gpu-0.5b": dict(hidden=896, layers=24, intermediate=4864, heads=14, kv_heads=2, vocab=151936),
}
# Dense bf16 peak of known cards (TFLOP/s) for the MFU estimate; override with --peak-tflops.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}


def build_model(out: Path, preset: str) -> Path:
    """A random Qwen2-shaped causal LM + the tiny BPE tokenizer, saved once to `out`."""
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from ares_train.tiny import train_tokenizer

    p = PRESETS[preset]
    tok = train_tokenizer(None, "bpe", 512)
    cfg = Qwen2Config(
        vocab_size=max(p["vocab"], len(tok)),
        hidden_size=p["hidden"],
        intermediate_size=p["intermediate"],
        num_hidden_layers=p["layers"],
        num_attention_heads=p["heads"],
        num_key_value_heads=p["kv_heads"],
        max_position_embeddings=4096,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    gen = model.generation_config
    gen.pad_token_id, gen.eos_token_id, gen.bos_token_id = (
        tok.pad_token_id,
        tok.eos_token_id,
        tok.eos_token_id,
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def n_params(model_dir: Path) -> int:
    """Parameters of the model (tied embeddings counted once), from its config."""
    cfg = json.loads((model_dir / "config.json").read_text())
    h, i, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    kv = cfg["num_key_value_heads"] * (h // cfg["num_attention_heads"])
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h + h + 2 * kv  # + norms, q/k/v biases
    head = 0 if cfg.get("tie_word_embeddings") else cfg["vocab_size"] * h
    return layers * per_layer + cfg["vocab_size"] * h + head + h


def matmul_params(model_dir: Path) -> tuple[int, int]:
    """(transformer body, LM head) parameters that take part in matmuls (the embedding lookup does not)."""
    cfg = json.loads((model_dir / "config.json").read_text())
    head = cfg["vocab_size"] * cfg["hidden_size"]
    return n_params(model_dir) - head - (0 if cfg.get("tie_word_embeddings") else head), head


def parser(doc: str) -> argparse.ArgumentParser:
    """The options both throughput scripts share (model preset, data, repeats, recording)."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--label", default="run", help="name of this measurement (e.g. before / after)")
    ap.add_argument("--preset", default="cpu-100m", choices=sorted(PRESETS))
    ap.add_argument("--work", type=Path, default=None, help="cache folder (default: /tmp/ares-perf/<data>)")
    ap.add_argument("--problems", type=int, default=8, help="problems of the shipped sample (max 60)")
    ap.add_argument("--k", type=int, default=2, help="responses per problem")
    ap.add_argument("--response-tokens", type=int, default=128, help="mean response length (0.5x-1.5x)")
    ap.add_argument("--dtype", default="auto", help="--dtype of the command")
    ap.add_argument("--extra", default="", help='more flags for the command: --extra="--flag value ..."')
    ap.add_argument(
        "--repeats", type=int, default=2, help="runs, each in a fresh process; the fastest counts"
    )
    ap.add_argument("--peak-tflops", type=float, default=None, help="card peak for MFU (default: by name)")
    ap.add_argument("--record", type=Path, default=None, help="append each summary as JSON to this file")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return ap


def parsed(ap: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    a = ap.parse_args(argv)
    data = f"{a.preset}-p{a.problems}-k{a.k}-r{a.response_tokens}"
    a.work = a.work or Path(tempfile.gettempdir()) / "ares-perf" / data
    return a


def prepare(a: argparse.Namespace) -> Path:
    """Build (once) the model and the datasets of these settings; the model folder."""
    model = build_model(a.work / "model", a.preset)
    build_data(a.work, model, problems=a.problems, k=a.k, response_tokens=a.response_tokens)
    return model


def _corpus() -> list[str]:
    from ares_data.sample import RATIONALES
    from ares_data.segment import segment

    sentences = []
    for line in RATIONALES.read_text(encoding="utf-8").splitlines():
        if line.strip():
            sentences += [s.text for s in segment(json.loads(line).get("text", ""))]
    return [s for s in sentences if s.strip()]


def _response(tok: Any, sentences: list[str], target: int, rng: random.Random) -> str:
    parts: list[str] = []
    while len(tok(" ".join(parts), add_special_tokens=False)["input_ids"]) < target:
        parts.append(rng.choice(sentences))
    return " ".join(parts)


def build_data(
    work: Path, model: Path, *, problems: int, k: int, response_tokens: int, seed: int = 0
) -> None:
    """Publish problems/rationales/scores/corrections named perf-* into `work`/store (once per folder)."""
    from ares_data.sample import SAMPLE_DIR
    from ares_data.segment import segment
    from ares_data.store import Store
    from ares_train.modeling import load_policy, weights_fingerprint
    from ares_train.prompting import render_prompt
    from ares_train.sampling import sampling_params, stop_token_ids

    store = Store(work / "store")
    if "perf-corrections" in store.names():
        return
    cli(
        "ares_data.cli", ["--store", work / "store", "ingest", "scienceqa", SAMPLE_DIR, "-o", "perf-problems"]
    )
    probs = store.resolve("perf-problems")
    policy = load_policy(model)
    tok, fp, rng = policy.tokenizer, weights_fingerprint(model), random.Random(seed)
    corpus = _corpus()
    params = json.dumps(sampling_params(1.0, 2 * response_tokens, stop_token_ids(policy)))
    rats, scores, corr = [], [], []
    for p in list(probs.load())[:problems]:
        prompt = render_prompt(policy, p)
        for s in range(k):
            text = _response(tok, corpus, int(response_tokens * rng.uniform(0.5, 1.5)), rng)
            ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            sents = [x.as_dict() for x in segment(text)]
            rid = f"{p['problem_id']}-{s}"
            rats.append(
                dict(
                    rationale_id=rid,
                    problem_id=p["problem_id"],
                    sample_index=s,
                    round=1,
                    text=text,
                    sentences=sents,
                    dropped_sentences=[],
                    generator=str(model),
                    generator_fingerprint=fp,
                    prompt=prompt,
                    token_ids=ids,
                    generation_params=params,
                )
            )
            teacher = dict(
                status="ok",
                error="",
                raw_response="",
                teacher="bench:random",
                prompt_sha="",
                input_tokens=0,
                output_tokens=0,
                cost_usd=0.0,
                attempts=1,
                cached=False,
            )
            scores.append(
                dict(
                    rationale_id=rid,
                    problem_id=p["problem_id"],
                    sentences=[x["text"] for x in sents],
                    scores=[round(rng.random(), 3) for _ in sents],
                    **teacher,
                )
            )
            corr.append(
                dict(
                    rationale_id=rid,
                    problem_id=p["problem_id"],
                    original=text,
                    corrected=text,
                    corrected_sentences=sents,
                    kept=len(sents),
                    edited=0,
                    added=0,
                    removed=0,
                    **teacher,
                )
            )
    rat = store.publish("perf-rationales", "rationales", rats, parents=[probs])
    store.publish("perf-scores", "scores", scores, parents=[rat])
    store.publish("perf-corrections", "corrections", corr, parents=[rat])


def cli(app_module: str, args: list[Any]) -> dict[str, Any]:
    """Run an ares-data / ares-train command in-process; its --json output (raises on a non-zero exit)."""
    import importlib

    from ares_data.cli import run_app

    app = importlib.import_module(app_module).app
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_app(app, [str(a) for a in args] + ["--json"])
    if code != 0:
        raise SystemExit(f"{app_module} {args} failed ({code}): {err.getvalue()[-2000:]}")
    return json.loads(out.getvalue())


class GpuSampler:
    """Mean GPU utilisation (%) from nvidia-smi, sampled every `every` seconds while running."""

    def __init__(self, every: float = 0.2) -> None:
        self.every, self.samples = every, []  # type: list[float]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        index = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or "0"
        while not self._stop.is_set():
            with contextlib.suppress(OSError, ValueError, subprocess.SubprocessError):
                out = subprocess.run(
                    [
                        "nvidia-smi",
                        "-i",
                        index,
                        "--query-gpu=utilization.gpu",
                        "--format=csv,noheader,nounits",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout
                self.samples.append(float(out.split()[0]))
            self._stop.wait(self.every)

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def peak_memory() -> dict[str, float]:
    """Peak RSS of this process (MiB) and, on CUDA, torch's peak allocated memory (MiB)."""
    import torch

    out = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        out["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def device_info(peak_tflops: float | None) -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"device": f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"}
    name = torch.cuda.get_device_name()
    peak = peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    return {"device": name, "peak_tflops": peak}


def timed(cls: Any, method: str, box: dict[str, float]) -> None:
    """Patch `cls.method` to record its wall and CPU seconds into `box` (train_s, train_cpu_s)."""
    import torch

    original = getattr(cls, method)

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        with GpuSampler() if torch.cuda.is_available() else contextlib.nullcontext() as sampler:
            result = original(self, *args, **kwargs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
        box["train_s"], box["train_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
        if sampler is not None:
            box["gpu_util_pct"] = sampler.mean
        return result

    setattr(cls, method, wrapper)


def child_runs(script: Path, args: list[str], repeats: int) -> list[dict[str, Any]]:
    """Run `script --child ARGS` `repeats` times, each in a fresh process (so peak memory is its own)."""
    results = []
    for _ in range(repeats):
        proc = subprocess.run([sys.executable, str(script), "--child", *args], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"child run failed:\n{proc.stderr[-4000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


def summarise(label: str, runs: list[dict[str, Any]], record: Path | None, **meta: Any) -> dict[str, Any]:
    """The fastest run (min wall time), with the min CPU time over the runs and the settings (`meta`)."""
    best = {"label": label, **meta, **min(runs, key=lambda r: r["train_s"]), "repeats": len(runs)}
    best["min_train_cpu_s"] = min(r["train_cpu_s"] for r in runs)
    best["all_train_s"] = [round(r["train_s"], 2) for r in runs]
    best["loadavg"] = os.getloadavg()
    if record is not None:
        with open(record, "a", encoding="utf-8") as f:
            f.write(json.dumps(best) + "\n")
    return best


def mfu(flops: float, seconds: float, peak_tflops: float | None) -> float | None:
    return flops / seconds / (peak_tflops * 1e12) if peak_tflops and seconds > 0 else None


def result(box: dict[str, Any], tokens: int, flops: float, peak_tflops: float | None) -> dict[str, Any]:
    """A child run's numbers: `box` (times, counts) + device, peak memory, tokens/s and MFU."""
    info = device_info(peak_tflops)
    out = {**box, **info, **peak_memory(), "tokens_per_s": tokens / box["train_s"],
           "tokens_per_cpu_s": tokens / box["train_cpu_s"]}  # fmt: skip
    out["mfu"] = mfu(flops, box["train_s"], info.get("peak_tflops"))
    return out


def main(script: str, argv: list[str] | None, a: argparse.Namespace, child: Any, **meta: Any) -> None:
    """The child runs `child(a)` and prints its JSON; the parent prepares the data, runs the children,
    prints (and records) the fastest run with `meta` (the settings)."""
    if a.child:
        print(json.dumps(child(a)))
        return
    model = prepare(a)
    passthrough = [x for x in (argv if argv is not None else sys.argv[1:]) if x != "--child"]
    runs = child_runs(Path(script), passthrough, a.repeats)
    best = summarise(a.label, runs, a.record, preset=a.preset, params=n_params(model), extra=a.extra,
                     problems=a.problems, k=a.k, **meta)  # fmt: skip
    print(json.dumps(best, indent=1))
