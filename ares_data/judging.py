"""Pairwise comparison of two rationale datasets: pairing, order swapping, win/tie/loss with intervals.

How a comparison of datasets A and B is counted (`summarize`):

* Rationales are paired by ``(problem_id, sample_index)`` (or, with ``by="problem"``, the lowest sample
  index of each problem in each dataset). Rationales without a partner are counted, not judged.
* Each pair is judged twice, once with A's rationale shown as Option A (order "ab") and once with B's shown
  as Option A (order "ba"), so a judge that always prefers one position scores exactly 50/50.
* **Headline rates** are over judgments: win = share of successful judgments preferring A's rationale,
  loss = preferring B's, tie = judged equal. Failed judgments are counted separately and excluded.
* **Consistent rates** are over pairs with both orders judged: win when both orders prefer A, loss when
  both prefer B, otherwise tie (the judge changed its mind with the order, or said tie).
* **Position bias** is the share of successful judgments that preferred whatever was shown first.
* **95% confidence intervals** come from a percentile bootstrap that resamples *pairs* (so the two
  judgments of a pair stay together), 2000 resamples with a fixed seed: deterministic for the same rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from .errors import UsageError

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
ORDERS = ("ab", "ba")
CI_METHOD = f"percentile bootstrap over pairs ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED})"


def _key_rows(rows: Iterable[dict], by: str) -> tuple[dict[tuple[str, int], dict], int]:
    keyed: dict[tuple[str, int], dict] = {}
    duplicates = 0
    for r in rows:
        key = (str(r["problem_id"]), int(r.get("sample_index") or 0))
        if by == "problem":
            best = keyed.get((key[0], 0))
            if best is None or key[1] < int(best.get("sample_index") or 0):
                keyed[(key[0], 0)] = r
            continue
        if key in keyed:
            duplicates += 1
            continue
        keyed[key] = r
    return keyed, duplicates


def _orders_for(pair_id: str, orders: tuple[str, ...]) -> tuple[str, ...]:
    """("random",) picks one order per pair, deterministically from the pair id; else the orders given."""
    if tuple(orders) == ("random",):
        return ("ab",) if int(pair_id, 16) % 2 == 0 else ("ba",)
    bad = [o for o in orders if o not in ORDERS]
    if bad or not orders:
        raise UsageError(f"unknown presentation order(s) {bad}", hint="use 'ab', 'ba' or 'random'")
    return tuple(orders)


def make_pairs(rows_a: Iterable[dict], rows_b: Iterable[dict], *, by: str = "sample",
               orders: tuple[str, ...] = ORDERS) -> tuple[list[dict], dict[str, int]]:
    """Pair two rationale lists -> (judge items, counts). One item per (pair, order), pairs in A's order.

    `orders`: ("ab", "ba") (both, the default), one of them, or ("random",): one seeded order per pair."""
    if by not in ("sample", "problem"):
        raise UsageError(f"unknown pairing '{by}'", hint="use 'sample' or 'problem'")
    a, dup_a = _key_rows(rows_a, by)
    b, dup_b = _key_rows(rows_b, by)
    items = []
    for key, ra in a.items():
        rb = b.get(key)
        if rb is None:
            continue
        ids = f"{ra.get('rationale_id')}|{rb.get('rationale_id')}"
        pair_id = hashlib.sha256(ids.encode()).hexdigest()[:16]
        for order in _orders_for(pair_id, orders):
            items.append({"pair_id": pair_id, "problem_id": key[0], "sample_index": key[1], "order": order,
                          "a": ra, "b": rb})
    paired = len({i["pair_id"] for i in items})
    counts = {"pairs": paired, "unpaired_a": len(a) - paired, "unpaired_b": len(b) - paired,
              "duplicates_a": dup_a, "duplicates_b": dup_b}
    return items, counts


def _pair_outcomes(rows: Iterable[dict]) -> dict[str, list[str]]:
    by_pair: dict[str, list[str]] = {}
    for r in rows:
        if r.get("status") == "ok" and r.get("winner") in ("a", "b", "tie"):
            by_pair.setdefault(r["pair_id"], []).append(r["winner"])
        else:
            by_pair.setdefault(r["pair_id"], [])
    return by_pair


def _rates(groups: list[list[str]]) -> dict[str, float]:
    flat = [w for g in groups for w in g]
    n = len(flat)
    if not n:
        return {"win": 0.0, "tie": 0.0, "loss": 0.0}
    return {"win": flat.count("a") / n, "tie": flat.count("tie") / n, "loss": flat.count("b") / n}


def _consistent(groups: list[list[str]]) -> list[list[str]]:
    out = []
    for g in groups:
        if len(g) < 2:
            continue
        out.append([g[0] if all(w == g[0] for w in g) else "tie"])
    return out


def bootstrap_ci(groups: list[list[str]], *, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> dict[str, list[float]]:
    """95% percentile intervals of win/tie/loss rates, resampling groups (pairs) with replacement."""
    import numpy as np

    groups = [g for g in groups if g]
    if not groups:
        return {k: [0.0, 0.0] for k in ("win", "tie", "loss")}
    counts = np.array([[g.count("a"), g.count("tie"), g.count("b")] for g in groups], dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(groups), size=(resamples, len(groups)))
    sums = counts[idx].sum(axis=1)  # resamples x 3
    totals = sums.sum(axis=1, keepdims=True)
    rates = sums / np.maximum(totals, 1)
    lo, hi = np.percentile(rates, [2.5, 97.5], axis=0)
    return {k: [round(float(lo[i]), 4), round(float(hi[i]), 4)] for i, k in enumerate(("win", "tie", "loss"))}


def summarize(rows: list[dict]) -> dict[str, Any]:
    """Win/tie/loss of dataset A against dataset B from judgment rows (see the module docstring)."""
    groups = list(_pair_outcomes(rows).values())
    ok = [r for r in rows if r.get("status") == "ok" and r.get("winner")]
    first_pref = sum(1 for r in ok if r.get("preferred") == "A")
    decided = sum(1 for r in ok if r.get("preferred") in ("A", "B"))
    consistent = _consistent(groups)
    return {
        "pairs": len(groups),
        "judgments": len(rows),
        "ok": len(ok),
        "failed": len(rows) - len(ok),
        "rates": {k: round(v, 4) for k, v in _rates(groups).items()},
        "ci95": bootstrap_ci(groups),
        "consistent_pairs": len(consistent),
        "consistent_rates": {k: round(v, 4) for k, v in _rates(consistent).items()},
        "consistent_ci95": bootstrap_ci(consistent),
        "position_a_preferred": round(first_pref / decided, 4) if decided else None,
        "ci_method": CI_METHOD,
    }


def _problems_by_id(store: Any, version: Any, problems_ref: str | None, wanted: set[str]) -> dict[str, dict]:
    if problems_ref:
        pv = store.resolve_kind(problems_ref, "problems")
    else:
        pv = store.parent_chain(version, "problems")
    ds = pv.load()
    ids = ds["problem_id"]
    return {ids[i]: ds[i] for i in range(len(ids)) if ids[i] in wanted}


async def _judge_rows(store: Any, teacher: Any, task: Any, args: list[tuple], stats: Any,
                      engine_options: dict[str, Any] | None, on_progress: Any, log: Any) -> list[dict]:
    from .engine import RequestCache, run_task

    rows: list[dict] = []
    try:
        with RequestCache.for_store(store.root) as cache:
            async for row in run_task(teacher, task, args, cache=cache, on_progress=on_progress, stats=stats,
                                      log=log, **(engine_options or {})):
                rows.append(row)
    finally:
        await teacher.aclose()
    return rows


def run_judge(
    store: Any,
    ref_a: str,
    ref_b: str,
    teacher: Any,
    *,
    name: str,
    by: str = "sample",
    orders: tuple[str, ...] = ORDERS,
    problems_ref: str | None = None,
    include_images: bool = True,
    prompt_path: Any = None,
    engine_options: dict[str, Any] | None = None,
    on_progress: Any = None,
    max_tokens: int | None = None,
    log: Any = None,
) -> tuple[Any, dict[str, Any]]:
    """Judge rationales A against B through the request engine; publish a judgments dataset.

    `engine_options`: run_task options (concurrency, rpm, tpm, timeout, max_attempts, max_cost);
    `max_tokens`: the reply budget (part of the request and the build; default the task's 256);
    `log`: an `engine.log.RequestLog` (`--log FILE`).
    Returns (published Version, summary). The summary (see `summarize`) is also in the manifest."""
    import asyncio

    from .engine import Stats
    from .errors import InputError
    from .tasks.judge import JudgeTask

    va, vb = store.resolve_kind(ref_a, "rationales"), store.resolve_kind(ref_b, "rationales")
    items, counts = make_pairs(va.load().to_list(), vb.load().to_list(), by=by, orders=orders)
    if not items:
        raise InputError(f"{va.ref} and {vb.ref} share no (problem_id, sample_index) pair to judge",
                         hint="use --by problem to pair the first sample of each problem")
    problems = _problems_by_id(store, va, problems_ref, {i["problem_id"] for i in items})
    missing = sorted({i["problem_id"] for i in items} - set(problems))
    if missing:
        raise InputError(f"problem(s) {missing[:5]} of {va.ref} are not in the problems dataset")
    task = JudgeTask(prompt_path, include_images=include_images, max_tokens=max_tokens)
    stats = Stats(total=len(items))
    args = [(problems[i["problem_id"]], i) for i in items]
    rows = asyncio.run(_judge_rows(store, teacher, task, args, stats, engine_options, on_progress, log))
    summary = summarize(rows)
    params = {"teacher": teacher.spec, "by": by, "orders": list(orders), "prompt_sha": task.prompt_sha,
              "include_images": include_images, "max_tokens": task.max_tokens}
    extra = {"teacher": teacher.spec, "prompt_sha": task.prompt_sha, "summary": summary,
             "pairing": counts, "usage": stats.as_dict()}
    with store.writer(name, "judgments", parents=[va, vb], params=params, extra=extra) as w:
        for row in rows:
            w.write(row)
            w.count(row["status"])
    return w.result, summary
