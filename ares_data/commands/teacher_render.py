"""Rendering for the teacher commands: the live progress bar (stderr), the dry-run plan, the summary."""

from __future__ import annotations

import time
from typing import Any

from ..engine import Stats
from .common import console, emit_json, err_console, published_message

_REFRESH_S = 0.1
_LOG_LINE_S = 10.0


class Progress:
    """done/total, failed, cached, requests/s, tokens, dollars and ETA on stderr; updated at most 10x/s.

    On a terminal it is a live bar redrawn from `update` (no refresh thread competing with the request
    loop); in a log or pipe it is one plain line every 10 s."""

    def __init__(self, label: str, stats: Stats) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self.stats = stats
        self._last = 0.0
        self._last_line = time.monotonic()
        self._label = label
        self._console = err_console()
        self._live = self._console.is_terminal
        self._bar = RichProgress(
            TextColumn(f"[bold]{label}[/bold]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("failed {task.fields[failed]}  cached {task.fields[cached]}  "
                       "{task.fields[rate]:.1f} req/s  {task.fields[tokens]} tok  ${task.fields[cost]:.4f}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self._console, transient=False, auto_refresh=False, disable=not self._live,
        )
        self._task = self._bar.add_task(label, total=stats.total, failed=0, cached=0, rate=0.0, tokens=0,
                                        cost=0.0)

    def __enter__(self) -> Progress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.update(self.stats, force=True)
        self._bar.stop()

    def update(self, s: Stats, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < _REFRESH_S and s.done != s.total:
            return
        self._last = now
        rate = s.sent / s.elapsed if s.elapsed else 0.0
        if not self._live:
            if force or now - self._last_line >= _LOG_LINE_S:
                self._last_line = now
                self._console.print(f"{self._label}: {s.done}/{s.total} done, failed {s.failed}, cached "
                                    f"{s.cached + s.from_cache}, {rate:.1f} req/s, "
                                    f"{s.input_tokens + s.output_tokens} tok, ${s.spent_usd:.4f}",
                                    highlight=False, soft_wrap=True)
            return
        self._bar.update(self._task, completed=s.done, failed=s.failed, cached=s.cached + s.from_cache,
                         rate=rate, tokens=s.input_tokens + s.output_tokens, cost=s.spent_usd, refresh=True)


def render_plan(plan: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"dry run: {plan['teacher']} -> {plan['output']} (nothing sent)")
    table.add_column("")
    table.add_column("value", justify="right")
    for key in ("rows", "rows_kept", "duplicates", "cached", "requests", "est_input_tokens",
                "est_output_tokens_max", "est_cost_usd_max"):
        table.add_row(key, str(plan[key]))
    c = console()
    c.print(table)
    c.print(plan["note"])
    if not plan["price_known"]:
        c.print("[yellow]no price known for this model: cost shown as 0 (add it with --prices)[/yellow]")


def summary(version: Any, stats: Stats, warnings: list[str]) -> dict[str, Any]:
    d = stats.as_dict()
    return {"ref": version.ref, "path": str(version.path), "reused": version.reused, "rows": d["done"],
            **{k: d[k] for k in ("ok", "failed", "cached", "from_cache", "refused_from_cache", "sent",
                                 "attempts", "input_tokens", "output_tokens", "cost_usd", "spent_usd",
                                 "elapsed_s")},
            "requests_per_s": round(stats.sent / stats.elapsed, 2) if stats.elapsed else 0.0,
            "warnings": warnings}


def render_summary(version: Any, stats: Stats, warnings: list[str], as_json: bool) -> None:
    out = summary(version, stats, warnings)
    if as_json:
        emit_json(out)
        return
    from rich.table import Table

    table = Table(title=published_message(version), show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    rows = {"rows": out["rows"], "ok": out["ok"], "failed": out["failed"],
            "cached (duplicate rows)": out["cached"], "answered from cache": out["from_cache"],
            "refused before (not sent again)": out["refused_from_cache"],
            "requests sent": out["sent"], "http attempts": out["attempts"],
            "tokens in / out": f"{out['input_tokens']} / {out['output_tokens']}",
            "cost of the dataset (USD)": f"{out['cost_usd']:.4f}",
            "spent in this run (USD)": f"{out['spent_usd']:.4f}",
            "requests/s": out["requests_per_s"], "elapsed (s)": out["elapsed_s"]}
    for key, val in rows.items():
        table.add_row(key, str(val))
    c = console()
    c.print(table)
    for w in warnings:
        c.print(f"[yellow]warning:[/yellow] {w}")
