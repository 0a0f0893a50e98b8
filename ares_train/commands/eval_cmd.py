"""`ares-train eval`: answer accuracy of a model on multiple-choice problems."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ares_data.commands.common import JsonOpt, StoreOpt, console, emit_json, get_store
from ares_data.commands.progress import ProgressBar

app = typer.Typer()


@app.command("eval")
def eval_cmd(
    model: Annotated[str, typer.Option("--model", help="Model folder (or LoRA adapter folder) to evaluate.")],
    problems: Annotated[str, typer.Option("--problems", help="Problems dataset, NAME or NAME@vN.")],
    output: Annotated[str, typer.Option("-o", "--output", help="Name of the eval dataset.")] = "eval",
    split: Annotated[str, typer.Option("--split", help="Split(s): test, val,test or all.")] = "test",
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1,
                                                help="Token budget of the rationale.")] = 96,
    answer_tokens: Annotated[int, typer.Option(
        "--answer-tokens", min=0,
        help="Token budget of the answer asked after a rationale that states none (0: don't ask).")] = 8,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Problems per generate call.")] = 16,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Evaluate the first N only.")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1 (default: cuda if available).")
                      ] = "",
    summary_file: Annotated[Optional[Path], typer.Option("--summary", help="Also write the JSON summary "
                                                         "to this file.")] = None,
    engine: Annotated[str, typer.Option("--engine", help="transformers (in this process) or server (an "
                                        "OpenAI-compatible endpoint: --base-url or --serve-cmd).")
                      ] = "transformers",
    base_url: Annotated[str, typer.Option("--base-url", help="engine server: e.g. http://localhost:8000/v1.")
                        ] = "",
    served_model: Annotated[str, typer.Option("--served-model", help="engine server: the model id to request "
                                              "(default: the only one listed).")] = "",
    serve_cmd: Annotated[str, typer.Option("--serve-cmd", help="engine server: start this engine on the "
                                           "checkpoint, e.g. 'vllm serve {model} --port {port}'.")] = "",
    concurrency: Annotated[int, typer.Option("--concurrency", min=1,
                                             help="engine server: requests in flight.")] = 8,
    max_attempts: Annotated[int, typer.Option("--max-attempts", min=1, help="engine server: attempts per "
                                              "request.")] = 3,
    log: Annotated[str, typer.Option("--log", help="engine server: one JSON line per request attempt.")] = "",
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Generate a rationale, then the answer, for each problem; report accuracy overall and by ScienceQA
    category (subject, context, grade band). Publishes an `eval` dataset of predictions.

    Example: ares-train eval --model runs/ares1/checkpoints/r2s2-sft --problems sqa --split test -o ev"""
    from ..deps import require_train_extra

    require_train_extra()
    from ..eval import EvalOptions, run_eval

    opts = EvalOptions(split=None if split == "all" else split, max_new_tokens=max_new_tokens,
                       answer_tokens=answer_tokens, batch_size=batch_size, limit=limit, device=device,
                       engine=engine, base_url=base_url, served_model=served_model, serve_cmd=serve_cmd,
                       concurrency=concurrency, max_attempts=max_attempts, log=log)
    with ProgressBar("eval", quiet=as_json) as progress:
        version, summary = run_eval(get_store(store), model, problems, output, opts, on_progress=progress)
    if summary_file is not None:
        summary_file.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if as_json:
        emit_json({"ref": version.ref, "path": str(version.path), "summary": summary})
        return
    render_accuracy({"accuracy": summary}, title=f"{model} on {problems} ({split})")
    console().print(f"published {version.ref} at {version.path}")


def render_accuracy(summaries: dict[str, dict[str, Any]], title: str) -> None:
    """A rich table: one column per summary, one row per category."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("category")
    for name in summaries:
        table.add_column(name, justify="right")
    keys: list[tuple[str, str]] = [("overall", "")]
    for group in ("subject", "context", "grade"):
        for s in summaries.values():
            for k in s.get(group, {}):
                if (group, k) not in keys:
                    keys.append((group, k))
    for group, k in keys:
        cells = []
        for s in summaries.values():
            acc = s.get(group) if not k else s.get(group, {}).get(k)
            cells.append("-" if not acc or acc["accuracy"] is None else
                         f"{acc['accuracy']:.1%} ({acc['correct']}/{acc['n']})")
        table.add_row(f"{group}: {k}" if k else "overall", *cells)
    console().print(table)
