"""`ares-data stats`: score distributions, failures, duplicates, edit rates, tokens and cost."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import UsageError
from .common import JsonOpt, StoreOpt, console, emit_json, get_store

app = typer.Typer()


@app.command("stats")
def stats_cmd(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@vN")],
    by: Annotated[Optional[str], typer.Option("--by", help="Group by a problems column (subject, grade, "
                                              "split, source, ...), joined through the parents.")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write the score histogram and per-position "
                                                 "means to this PNG file.")] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Statistics of a dataset version (polars over the memory-mapped Arrow data).

    Example: ares-data stats rats-scores --by subject --plot scores.png"""
    from ..stats import compute
    from ..stats import plot as draw

    if plot is not None and not plot.parent.is_dir():  # a typo in the folder should not create folders
        raise UsageError(f"--plot {plot}: folder {plot.parent} does not exist",
                         hint="create it first, or write the PNG to an existing folder")
    s = get_store(store)
    stats = compute(s, s.resolve(ref), by=by)
    if plot is not None:
        stats["plot"] = str(draw(stats, plot))
    if as_json:
        emit_json(stats)
        return
    _render(stats)


def _render(st: dict[str, Any]) -> None:
    from rich.table import Table

    c = console()
    c.print(f"[bold]{st['ref']}[/bold]  kind={st['kind']}  rows={st['rows']}")
    if "failed" in st:
        c.print(f"failed: {st['failed']} ({st['failure_rate']:.1%})  cached: {st['cached']}  "
                f"tokens in/out: {st['tokens']['input']}/{st['tokens']['output']}  "
                f"cost: ${st['cost_usd']:.4f}")
        for reason, n in st["failure_reasons"].items():
            c.print(f"  {n} x {reason or '(no message)'}")
    if "score" in st:
        sc = st["score"]
        c.print(f"sentences: {st['sentences']}  score mean {sc['mean']} median {sc['median']} std {sc['std']}"
                f"  rationale mean {st['rationale_mean_score']}")
        hist = st["histogram"]
        peak = max(hist["counts"]) or 1
        edges, last = hist["edges"], len(hist["counts"]) - 1
        for i, n in enumerate(hist["counts"]):
            close = "]" if i == last else ")"  # the last bin includes 1.0
            c.print(f"  [{edges[i]:.1f}, {edges[i + 1]:.1f}{close} {'#' * round(30 * n / peak):<30} {n}")
        means = "  ".join(f"{p['position']}:{p['mean']}" for p in st["by_position"][:12])
        c.print(f"mean by position: {means}")
    if "duplicate_rationale_rate" in st:
        c.print(f"duplicate rationales: {st['duplicate_rationale_rate']:.1%}")
    if "edits" in st:
        e = st["edits"]
        c.print("edit rates: " + ", ".join(f"{k} {v:.1%}" for k, v in e["rates"].items())
                + f"; changed rationales {e['changed_rate']:.1%}")
    extras = ("with_image", "subjects", "sentences_per_rationale", "steps", "positive_label_rate",
              "mean_score_margin")
    for key in (k for k in extras if k in st):
        c.print(f"{key.replace('_', ' ')}: {st[key]}")
    if "by" in st:
        groups = st["by"]["groups"]
        table = Table(title=f"by {st['by']['column']}")
        for col in groups[0] if groups else []:
            table.add_column(col)
        for g in groups:
            table.add_row(*(str(v) for v in g.values()))
        c.print(table)
    if "plot" in st:
        c.print(f"plot written to {st['plot']}")
