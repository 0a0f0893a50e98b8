"""`ares demo`: the ARES loop end to end on the shipped sample (see `ares_train.demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ares_data.commands.common import JsonOpt, console, emit_json


def demo_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder for everything the demo makes (its own store, "
                                      "models, run, report). Running again resumes.")] = Path("ares-demo"),
    teacher: Annotated[str, typer.Option("--teacher", help="Teacher for scores, corrections and judging: "
                                         "reference (offline, no key), anthropic:MODEL or openai:MODEL.")
                       ] = "reference",
    teacher_base_url: Annotated[Optional[str], typer.Option("--teacher-base-url",
                                                            help="Teacher API base URL.")] = None,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="ARES rounds (RL step + correction step).")
                      ] = 2,
    k: Annotated[int, typer.Option("--k", min=1, help="Rationales sampled per problem.")] = 4,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=4, help="Rationale length.")] = 64,
    limit: Annotated[int, typer.Option("--limit", min=0, help="Train problems used (0 = all 40).")] = 0,
    warm_epochs: Annotated[float, typer.Option("--warm-epochs", help="Warm-start SFT epochs.")] = 40.0,
    threads: Annotated[int, typer.Option("--threads", min=0, help="torch CPU threads (0 = torch's default)."
                                         )] = 1,
    learning: Annotated[bool, typer.Option("--learning/--no-learning", help="Also run the second part: "
                                           "sentence-level PPO on a controlled task (chained additions "
                                           "scored by a checker), where the reward rises.")] = True,
    learning_rounds: Annotated[int, typer.Option("--learning-rounds", min=0,
                                                 help="PPO rounds of the second part.")] = 6,
    as_json: JsonOpt = False,
) -> None:
    """Run ARES end to end on the shipped ScienceQA sample with a tiny model on CPU: ingest, warm-start by
    SFT on the reference rationales, evaluate, N rounds of rollout -> score -> PPO and rollout -> correct
    -> SFT, evaluate, and judge the final rationales against the first ones (this part shows the machinery:
    the tiny model does not learn from the heuristic teacher). Then, unless --no-learning, a few rounds of
    sentence-level PPO on a controlled task whose checker scores every sentence (this part shows learning).
    Ends with a table per part, PNG plots and the paths of everything made.

    Example: ares demo (about 70 s on 2 CPU cores; writes ./ares-demo), or ares demo --teacher
    openai:gpt-4o-mini --out demo-gpt with OPENAI_API_KEY set."""
    from ares_train.deps import require_train_extra

    require_train_extra()
    from ares_train.demo import DemoOptions, run_demo

    from .loop_cmds import ConsoleReporter, render_rounds

    opts = DemoOptions(out=out, teacher=teacher, teacher_base_url=teacher_base_url or "", rounds=rounds, k=k,
                       max_new_tokens=max_new_tokens, limit=limit, warm_epochs=warm_epochs, threads=threads,
                       learning=learning, learning_rounds=learning_rounds)
    reporter = None if as_json else ConsoleReporter()
    try:
        report = run_demo(opts, reporter)
    finally:
        if reporter:
            reporter.close()
    if as_json:
        emit_json(report)
        return
    c = console()
    c.print(f"Part 1 measures {report['measures']}.", highlight=False)
    render_rounds(report["rounds"], f"ARES demo ({teacher} teacher): the policy after each round "
                  "(round 0 = the warm start)", reward="reward (mean sentence score of round r+1's rollouts)")
    render_judge(report["judge"])
    if "learning" in report:
        render_learning(report["learning"])
    for name, path in report["paths"].items():
        if name != "datasets":
            c.print(f"  {name}: {path}", highlight=False, soft_wrap=True)  # paths stay copy-pasteable
    c.print(f"  datasets: {', '.join(report['paths']['datasets'])}", highlight=False)


def render_judge(judge: dict[str, Any]) -> None:
    r, ci = judge["rates"], judge["ci95"]

    def rate(k: str) -> str:
        return f"{k} {r[k]:.0%} [{ci[k][0]:.0%}, {ci[k][1]:.0%}]"

    console().print(f"judge: final rationales ({judge['a']}) vs first round ({judge['b']}), both orders, "
                    f"{judge['pairs']} pairs: {rate('win')}, {rate('tie')}, {rate('loss')} (95% CI)",
                    highlight=False)


def render_learning(part: dict[str, Any]) -> None:
    from rich.table import Table

    rows, c = part["rounds"], console()
    c.print(f"Part 2 measures {part['measures']}.", highlight=False)
    table = Table(title=f"ARES demo, controlled task ({part['variant']}, seed {part['seed']}, "
                  f"{part['problems']} problems x {part['k']} rationales per round)")
    for col in ("round", "mean sentence score", "right steps", "answer accuracy", "KL to warm start"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["round"]), f"{r['mean_score']:.3f}", f"{r['step_accuracy']:.1%}",
                      f"{r['answer_accuracy']:.1%}", f"{r['kl']:.2f}")
    c.print(table)
    first, last = rows[0]["mean_score"], rows[-1]["mean_score"]
    c.print(f"controlled task: mean sentence score {first:.3f} (warm start) -> {last:.3f} after "
            f"{rows[-1]['round']} PPO round(s) ({last - first:+.3f})", highlight=False)
