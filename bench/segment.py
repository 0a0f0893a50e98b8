"""Compare sentence segmenters for ARES rationales: boundary F1 on the gold set, and speed.

    python bench/segment.py                 # table (markdown) on stdout
    python bench/segment.py --errors ares   # also list the gold texts an engine gets wrong

Gold set: bench/data/segment_gold.jsonl. `split` = "tune": texts written with the rules;
"heldout-1": written after the rules were frozen, measured, then used to fix three misses; "heldout-2" and
"heldout-3": written after later freezes and never used for tuning. A boundary is the start offset of
every sentence but the first, after trimming whitespace, so splitting before or after a space counts the
same. Speed: rationales per CPU-second on one core (the process is pinned to one CPU) over the gold texts
with 3-6 sentences, and over "long" texts of 4 of them joined, computing character offsets for every
engine; best of --repeat runs of at least --seconds each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOLD = Path(__file__).parent / "data" / "segment_gold.jsonl"
Spans = list[tuple[int, int]]
SPLITS = ("tune", "heldout-1", "heldout-2", "heldout-3")


def load_gold(path: Path = GOLD) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def gold_spans(rec: dict) -> Spans:
    spans, pos = [], 0
    for sent in rec["sentences"]:
        start = rec["text"].index(sent, pos)
        pos = start + len(sent)
        spans.append((start, pos))
    return spans


def boundaries(text: str, spans: Spans) -> set[int]:
    starts = []
    for start, end in spans:
        while start < end and text[start].isspace():
            start += 1
        if start < end:
            starts.append(start)
    return set(sorted(starts)[1:])


def offsets_ok(text: str, spans: Spans) -> bool:
    """Spans in order, non-overlapping, covering every non-space character."""
    covered, last = 0, 0
    for start, end in spans:
        if start < last or end < start:
            return False
        covered += sum(1 for ch in text[start:end] if not ch.isspace())
        last = end
    return covered == sum(1 for ch in text if not ch.isspace())


# ---- engines: each maps text -> list of (start, end) character spans ----

def engine_ares() -> Callable[[str], Spans]:
    from ares_data.segment import segment

    return lambda text: [(s.start, s.end) for s in segment(text)]


def engine_pysbd() -> Callable[[str], Spans]:
    import pysbd

    seg = pysbd.Segmenter(language="en", clean=False, char_span=True)
    return lambda text: [(s.start, s.end) for s in seg.segment(text)]


def engine_blingfire() -> Callable[[str], Spans]:
    import blingfire

    return lambda text: list(blingfire.text_to_sentences_and_offsets(text)[1]) if text.strip() else []


def _punkt(with_abbrevs: bool) -> Callable[[str], Spans]:
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    params = PunktParameters()
    if with_abbrevs:
        from ares_data import segment as rules

        params.abbrev_types = set(rules._NEVER_END | rules._BEFORE_DIGIT | {"u.s", "d.c", "a.m", "p.m"})
    tok = PunktSentenceTokenizer(params)
    return lambda text: list(tok.span_tokenize(text))


def engine_punkt() -> Callable[[str], Spans]:
    return _punkt(False)


def engine_punkt_abbrev() -> Callable[[str], Spans]:
    return _punkt(True)


def engine_syntok() -> Callable[[str], Spans]:
    import syntok.segmenter as sg

    def run(text: str) -> Spans:
        return [(s[0].offset, s[-1].offset + len(s[-1].value)) for para in sg.analyze(text) for s in para]

    return run


ENGINES = {
    "ares (rules)": engine_ares,
    "pysbd 0.3.4": engine_pysbd,
    "blingfire 0.1.8": engine_blingfire,
    "nltk punkt (untrained)": engine_punkt,
    "nltk punkt + our abbrevs": engine_punkt_abbrev,
    "syntok 1.4.4": engine_syntok,
}


def score(fn: Callable[[str], Spans], gold: list[dict]) -> dict:
    tp = fp = fn_ = exact = bad_offsets = 0
    wrong = []
    for rec in gold:
        text = rec["text"]
        spans = fn(text)
        bad_offsets += not offsets_ok(text, spans)
        want, got = boundaries(text, gold_spans(rec)), boundaries(text, spans)
        tp, fp, fn_ = tp + len(want & got), fp + len(got - want), fn_ + len(want - got)
        exact += want == got
        if want != got:
            wrong.append((rec["id"], [text[a:b].strip() for a, b in spans]))
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn_) if tp + fn_ else 1.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"p": p, "r": r, "f1": f1, "exact": exact / len(gold), "bad_offsets": bad_offsets, "wrong": wrong}


def speed(fn: Callable[[str], Spans], texts: list[str], min_seconds: float = 1.0, repeat: int = 3) -> float:
    """Rationales per CPU-second of this process: best of `repeat` runs of at least `min_seconds`. CPU time,
    not wall time, because the machine is shared: waiting for the core is not segmentation time."""
    rates = []
    for _ in range(repeat):
        done, t0 = 0, time.process_time()
        while True:
            for text in texts:
                fn(text)
            done += len(texts)
            elapsed = time.process_time() - t0
            if elapsed >= min_seconds:
                rates.append(done / elapsed)
                break
    return max(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--errors", default="", help="engine name prefix whose wrong texts to list")
    ap.add_argument("--seconds", type=float, default=1.0, help="minimum seconds per timing run")
    ap.add_argument("--repeat", type=int, default=3, help="timing runs per engine and corpus (best counts)")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    gold = load_gold()
    splits = {s: [r for r in gold if r["split"] == s] for s in SPLITS}
    typical = [r["text"] for r in gold if 3 <= len(r["sentences"]) <= 6]
    chars = sum(map(len, typical)) / len(typical)
    long = [" ".join(typical[i:i + 4]) for i in range(0, len(typical) - 3, 4)]
    counts = " + ".join(f"{len(v)} {k}" for k, v in splits.items())
    print(f"gold: {counts} texts; speed over {len(typical)} texts with 3-6 sentences (mean {chars:.0f} "
          f"chars), one core; 'long' = 4 of them joined (~{4 * chars:.0f} chars)\n")
    print("| engine | F1 tune | F1 held-out-1 | F1 held-out-2 | F1 held-out-3 | F1 all | texts exact (all) "
          "| bad offsets | rationales/s | long rationales/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, make in ENGINES.items():
        fn = make()
        res = {k: score(fn, v) for k, v in splits.items() if v}
        res["all"] = score(fn, gold)
        rate = speed(fn, typical, args.seconds, args.repeat)
        rate_long = speed(fn, long, args.seconds, args.repeat)
        f1s = " | ".join(f"{res[k]['f1']:.3f}" if k in res else "-" for k in SPLITS)
        print(f"| {name} | {f1s} | {res['all']['f1']:.3f} | "
              f"{res['all']['exact']:.0%} | {res['all']['bad_offsets']} | {rate:,.0f} | {rate_long:,.0f} |")
        if args.errors and name.startswith(args.errors):
            for rid, sents in res["all"]["wrong"]:
                print(f"    {rid}: {sents}", file=sys.stderr)


if __name__ == "__main__":
    main()
