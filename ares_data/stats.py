"""Dataset statistics with polars over the memory-mapped Arrow file (no row-by-row Python).

`compute(store, version, by=None)` returns a JSON-ready dict: rows, failure rate and reasons, the
sentence-score histogram and mean score per sentence position (scores), duplicate-rationale rate,
correction edit rates, tokens and cost; `by="subject"` (or any problems column) adds a per-group table
joined through the problems parent. `plot(stats, path)` draws the score histogram and per-position means.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from .errors import UsageError
from .store import DATA_FILE, Store, Version

BINS = 10  # score histogram: [0, .1), [.1, .2), ..., [.9, 1.0]
MAX_POSITIONS = 32  # per-position means are reported for the first sentences only
_TEACHER_COLS = ("status", "error", "input_tokens", "output_tokens", "cost_usd", "cached", "attempts")


def read_table(version: Version, columns: list[str] | None = None) -> pa.Table:
    """The version's Arrow data, memory-mapped (zero-copy), optionally only some columns; checked against the
    manifest's row count and the kind's schema (IntegrityError naming the version)."""
    path = Path(version.path) / DATA_FILE
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_stream(source).read_all()
    version.check_table(table.num_rows, table.schema)
    if columns is not None:
        table = table.select([c for c in columns if c in table.column_names])
    return table


def frame(version: Version, columns: list[str] | None = None) -> pl.DataFrame:
    return pl.from_arrow(read_table(version, columns))  # type: ignore[return-value]


def compute(store: Store, version: Version, by: str | None = None) -> dict[str, Any]:
    kind = version.kind
    cols = {
        "scores": ["rationale_id", "problem_id", "sentences", "scores", *_TEACHER_COLS],
        "corrections": ["problem_id", "kept", "edited", "added", "removed", *_TEACHER_COLS],
        "rationales": ["problem_id", "text", "sentences"],
        "problems": ["problem_id", "subject", "grade", "split", "source", "image"],
        "prm": ["problem_id", "labels"],
        "dpo": ["problem_id", "chosen_score", "rejected_score"],
        "dpo-text": ["problem_id", "chosen_score", "rejected_score"],
    }.get(kind, ["problem_id"])
    df = frame(version, cols)
    out: dict[str, Any] = {"ref": version.ref, "kind": kind, "rows": df.height}
    if "status" in df.columns:
        out.update(teacher_stats(df))
    if kind == "scores":
        out.update(score_stats(df))
        out["duplicate_rationale_rate"] = duplicate_rate(df, pl.col("sentences").list.join("\x1f"))
    elif kind == "corrections":
        out["edits"] = edit_stats(df)
    elif kind == "rationales":
        out["duplicate_rationale_rate"] = duplicate_rate(df, pl.col("text"))
        out["sentences_per_rationale"] = _r(df.select(pl.col("sentences").list.len().mean()).item())
    elif kind == "problems":
        out["with_image"] = df.select(pl.col("image").struct.field("bytes").is_not_null().sum()).item()
        out["subjects"] = dict(df.group_by("subject").len().sort("subject").iter_rows())
        df = df.drop("image")
    elif kind == "prm":
        labels = df.select(pl.col("labels").explode().drop_nulls())["labels"]
        out["steps"] = labels.len()
        out["positive_label_rate"] = _r(labels.mean()) if labels.len() else None
    elif kind.startswith("dpo"):
        margin = (pl.col("chosen_score") - pl.col("rejected_score")).mean()
        out["mean_score_margin"] = _r(df.select(margin).item())
    if by:
        out["by"] = {"column": by, "groups": group_stats(store, version, df, by)}
    return out


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def teacher_stats(df: pl.DataFrame) -> dict[str, Any]:
    failed = df.filter(pl.col("status") != "ok")
    reasons = (failed.group_by(pl.col("error").fill_null("").str.slice(0, 80).alias("reason"))
               .len().sort(["len", "reason"], descending=[True, False]).head(10))
    sums = df.select(pl.col("input_tokens").sum(), pl.col("output_tokens").sum(), pl.col("cost_usd").sum(),
                     pl.col("cached").sum(), pl.col("attempts").mean()).row(0)
    return {
        "failed": failed.height,
        "failure_rate": _r(failed.height / df.height if df.height else 0.0),
        "failure_reasons": {r: n for r, n in reasons.iter_rows()},
        "tokens": {"input": int(sums[0] or 0), "output": int(sums[1] or 0)},
        "cost_usd": _r(sums[2] or 0.0, 6),
        "cached": int(sums[3] or 0),
        "mean_attempts": _r(sums[4]),
    }


def score_stats(df: pl.DataFrame) -> dict[str, Any]:
    ok = df.filter((pl.col("status") == "ok") & (pl.col("scores").list.len() > 0)).select("scores")
    flat = (ok.lazy().select(pl.int_ranges(0, pl.col("scores").list.len()).alias("pos"), pl.col("scores"))
            .explode(["pos", "scores"]).collect())
    s = pl.col("scores")
    summary = flat.select(s.mean().alias("mean"), s.median().alias("median"), s.std().alias("std"),
                          s.min().alias("min"), s.max().alias("max"), pl.len().alias("n")).row(0, named=True)
    # + 1e-4: float32 0.7 is 0.69999999 and belongs in the [0.7, 0.8) bin
    b = (s * BINS + 1e-4).floor().clip(0, BINS - 1).cast(pl.Int32).alias("b")
    bins = flat.select(b).group_by("b").len()
    counts = [0] * BINS
    for b, n in bins.iter_rows():
        counts[b] = n
    pos = (flat.filter(pl.col("pos") < MAX_POSITIONS).group_by("pos")
           .agg(s.mean().alias("mean"), pl.len().alias("n")).sort("pos"))
    rationale_means = ok.select(s.list.mean().alias("m"))
    return {
        "sentences": int(summary["n"]),
        "score": {k: _r(summary[k]) for k in ("mean", "median", "std", "min", "max")},
        "rationale_mean_score": _r(rationale_means["m"].mean()),
        "histogram": {"edges": [round(i / BINS, 2) for i in range(BINS + 1)], "counts": counts},
        "by_position": [{"position": p + 1, "mean": _r(m), "n": n} for p, m, n in pos.iter_rows()],
    }


def duplicate_rate(df: pl.DataFrame, key: pl.Expr) -> float:
    """Share of rows whose rationale text repeats an earlier one for the same problem."""
    if df.height == 0:
        return 0.0
    unique = df.select((pl.col("problem_id").hash() ^ key.hash()).n_unique()).item()  # 64-bit hashes
    return _r(1 - unique / df.height) or 0.0


def edit_stats(df: pl.DataFrame) -> dict[str, Any]:
    ok = df.filter(pl.col("status") == "ok")
    sums = ok.select(pl.col("kept", "edited", "added", "removed").sum()).row(0, named=True)
    total = sum(int(v or 0) for v in sums.values())
    changed = ok.filter((pl.col("edited") + pl.col("added") + pl.col("removed")) > 0).height
    return {
        "sentences": {k: int(v or 0) for k, v in sums.items()},
        "rates": {k: _r(int(v or 0) / total) if total else 0.0 for k, v in sums.items()},
        "changed_rationales": changed,
        "changed_rate": _r(changed / ok.height) if ok.height else 0.0,
    }


def group_stats(store: Store, version: Version, df: pl.DataFrame, by: str) -> list[dict[str, Any]]:
    problems = store.parent_chain(version, "problems")
    pcols = read_table(problems).column_names
    if by not in pcols or by == "image":
        choices = ", ".join(c for c in pcols if c not in ("image", "choices"))
        raise UsageError(f"--by {by}: not a problems column (choose from: {choices})")
    groups = frame(problems, ["problem_id", by]).with_columns(pl.col(by).cast(pl.Utf8).fill_null(""))
    keep = [c for c in ("problem_id", "status", "scores", "edited", "added", "removed", "cost_usd")
            if c in df.columns]  # the join copies what it carries: leave the sentences behind
    joined = (df.select(keep).join(groups, on="problem_id", how="left")
              .with_columns(pl.col(by).fill_null("(unknown)")))
    aggs = [pl.len().alias("rows")]
    if "status" in joined.columns:
        aggs.append((pl.col("status") != "ok").mean().alias("failure_rate"))
    if "scores" in joined.columns:
        aggs.append(pl.col("scores").list.mean().mean().alias("mean_score"))
    if "edited" in joined.columns:
        changed = (pl.col("edited") + pl.col("added") + pl.col("removed")) > 0
        aggs.append(changed.mean().alias("changed_rate"))
    if "cost_usd" in joined.columns:
        aggs.append(pl.col("cost_usd").sum().alias("cost_usd"))
    table = joined.group_by(by).agg(aggs).sort(by)
    return [{k: (_r(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
            for row in table.iter_rows(named=True)]


def plot(stats: dict[str, Any], path: str | Path) -> Path:
    """Score histogram + mean score per sentence position, as a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "histogram" not in stats:
        raise UsageError(f"--plot needs a scores dataset; {stats['ref']} is {stats['kind']}")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=100)
    hist = stats["histogram"]
    width = hist["edges"][1] - hist["edges"][0]
    ax1.bar(hist["edges"][:-1], hist["counts"], width=width * 0.9, align="edge", color="#4c72b0")
    ax1.set(title="sentence scores", xlabel="score", ylabel="sentences", xlim=(0, 1))
    pos = stats["by_position"]
    ax2.plot([p["position"] for p in pos], [p["mean"] for p in pos], marker="o", color="#dd8452")
    ax2.set(title="mean score by sentence position", xlabel="sentence", ylabel="mean score", ylim=(0, 1))
    ax2.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(stats["ref"])
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    plt.close(fig)
    return out
