"""`ares-train loop` (the alternating ARES loop, resumable) and `ares-train status RUN_DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ares_data.commands.common import JsonOpt, StoreOpt, console, emit_json, err_console, get_store

app = typer.Typer()

RunDirOpt = Annotated[Path, typer.Option("--run-dir", help="Run folder (run.json, checkpoints/). Running "
                                         "again with the same folder continues where it stopped.")]


@app.command("loop")
def loop_cmd(
    config: Annotated[Optional[Path], typer.Option("--config", help="Loop config (TOML/YAML): a \\[loop] "
                                                   "table and \\[rollout], \\[ppo], \\[sft], \\[eval] tables "
                                                   "(see examples/ares.toml).")] = None,
    run_dir: RunDirOpt = Path("ares-run"),
    model: Annotated[Optional[str], typer.Option("--model", help="Starting policy (overrides the config).")
                     ] = None,
    problems: Annotated[Optional[str], typer.Option("--problems", help="Problems dataset.")] = None,
    teacher: Annotated[Optional[str], typer.Option("--teacher", help="Teacher spec.")] = None,
    teacher_base_url: Annotated[Optional[str], typer.Option("--teacher-base-url",
                                                            help="Teacher API base URL.")] = None,
    rounds: Annotated[Optional[int], typer.Option("--rounds", min=1, help="Number of rounds.")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=0, help="Use only the first N problems of "
                                                 "the split (0 = all); e.g. --limit 8 --rounds 1 to try a "
                                                 "config on a CPU.")] = None,
    schedule: Annotated[Optional[str], typer.Option("--schedule", help="Steps per round, e.g. rl,sft | rl "
                                                    "| sft | rl,rl,sft.")] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the ARES loop: per round, rollout -> score -> ppo then rollout -> correct -> sft (configurable),
    evaluating after each round. Every artifact is a versioned dataset or a checkpoint with a manifest;
    RUN_DIR/run.json links them. Killed at any point, the same command continues from the last finished
    stage without paying for teacher requests again.

    Example: ares-train loop --config examples/ares.toml --run-dir runs/ares1 (then: ares-train status
    runs/ares1). Flags override the config's loop values, e.g. --schedule rl for the RL-only ablation.
    Offline on a CPU: ares-train loop --config examples/ares-offline.toml --limit 8 --rounds 1."""
    from ..deps import require_train_extra

    require_train_extra()
    from ..loop.config import load_loop_settings
    from ..loop.run import LoopRun, round_table

    overrides = {"model": model, "problems": problems, "teacher": teacher, "rounds": rounds,
                 "limit": limit, "teacher_base_url": teacher_base_url, "schedule": schedule}
    settings = load_loop_settings(config, overrides)
    run = LoopRun(run_dir, settings, get_store(store))
    reporter = None if as_json else ConsoleReporter()
    try:
        manifest = run.run(reporter)
    finally:
        if reporter:
            reporter.close()
    if as_json:
        emit_json({"run_dir": str(run_dir), "status": manifest["status"],
                   "final_model": manifest["final_model"], "rounds": round_table(manifest),
                   "stages": manifest["stages"]})
        return
    render_rounds(round_table(manifest), f"ARES loop {run_dir}")
    console().print(f"final model: {manifest['final_model']}\nrun manifest: {run_dir / 'run.json'}")


@app.command("status")
def status_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A loop run folder (holds run.json).")],
    as_json: JsonOpt = False,
) -> None:
    """Show where a loop run is: every stage with its status, outputs, key metrics and time, then reward and
    accuracy per round. Example: ares-train status runs/ares1 --json"""
    from ..loop.run import read_run, round_table, run_is_active

    manifest = read_run(run_dir)
    stages = manifest.get("stages", [])
    current = next((s["id"] for s in stages if s["status"] != "done"), None)
    done = sum(1 for s in stages if s["status"] == "done")
    active = run_is_active(run_dir)
    if as_json:
        emit_json({"run_dir": str(run_dir), "status": manifest.get("status"), "active": active,
                   "current": current, "done": done, "total": len(stages), "rounds": round_table(manifest),
                   "stages": stages})
        return
    from rich.table import Table

    state = manifest.get("status")
    if state != "done":  # run.json says "running" until the end; the lock tells whether a process is on it
        state = "running" if active else "stopped (rerun the same command to continue)"
    table = Table(title=f"{run_dir}: {state} ({done}/{len(stages)} stages done"
                  + (f", next {current}" if current else "") + ")")
    for col in ("stage", "status", "outputs", "metrics", "s"):
        table.add_column(col)
    for s in stages:
        outputs = ", ".join(str(v) for v in s.get("outputs", {}).values())
        table.add_row(s["id"], s["status"], outputs, _metrics_text(s), str(s.get("seconds") or ""))
    console().print(table)
    render_rounds(round_table(manifest), "per round")


def _metrics_text(stage: dict[str, Any]) -> str:
    m = stage.get("metrics") or {}
    keys = {"rollout": ("rows", "mean_chars"), "score": ("mean_score", "failed", "sent", "from_cache"),
            "correct": ("edited", "failed", "sent", "from_cache"), "eval": ("accuracy", "unparsed"),
            "ppo": ("reward/total", "loss/policy", "objective/kl_current"),
            "grpo": ("reward/sentence", "loss/policy", "objective/kl_current"),
            "sft": ("train_loss", "steps")}.get(stage["kind"], ())
    return " ".join(f"{k}={_fmt(m[k])}" for k in keys if m.get(k) is not None)


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def render_rounds(rows: list[dict[str, Any]], title: str,
                  reward: str = "reward (mean sentence score of the round's RL rollouts)") -> None:
    from rich.table import Table

    table = Table(title=title)
    for col in ("round", reward, "accuracy", "sentences edited", "seconds"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["round"]), "-" if r["reward"] is None else f"{r['reward']:.3f}",
                      "-" if r["accuracy"] is None else f"{r['accuracy']:.1%}",
                      "-" if r["edited"] is None else str(r["edited"]), f"{r['seconds']:.0f}")
    console().print(table)


class ConsoleReporter:
    """Stage lines on stderr plus a transient progress bar for the running stage."""

    def __init__(self) -> None:
        self.err = err_console()
        self.bar: Any = None
        self.task: Any = None
        self.label = ""

    def phase(self, name: str) -> None:
        """A top-level step of a longer job (the demo), with a bar for its progress."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.close()
        self.err.print(f"[bold]▶ {name}[/bold]", highlight=False)
        if not self.err.is_terminal:
            return
        self.bar = Progress(TextColumn("  working"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=self.err, transient=True)
        self.bar.start()
        self.task = self.bar.add_task(name, total=None)

    def stage_started(self, stage: Any, index: int, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.close()
        self.label = f"[{index + 1}/{total}] {stage.id}"
        if not self.err.is_terminal:  # no live bar in logs and pipes: the stage lines say enough
            return
        self.bar = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=self.err, transient=True)
        self.bar.start()
        self.task = self.bar.add_task(stage.id, total=None)

    def progress(self, done: int, total: int | None) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=total)

    def stage_finished(self, stage: Any, skipped: bool) -> None:
        self.close()
        if skipped:
            self.err.print(f"[dim]= {stage.id} done earlier[/dim]", highlight=False)
            return
        outputs = ", ".join(str(v) for v in stage.outputs.values())
        metrics = _metrics_text({"kind": stage.kind, "metrics": stage.metrics})
        self.err.print(f"[green]✓[/green] {stage.id} ({stage.seconds:.1f}s) -> {outputs} {metrics}",
                       highlight=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
