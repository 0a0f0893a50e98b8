"""`ares-data import-scores`: sentence scores from an external scorer as a `scores` dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import JsonOpt, OutputOpt, StoreOpt, get_store
from .ingest_cmds import SkipOpt, _quiet, report
from .progress import ProgressBar

app = typer.Typer()


@app.command("import-scores")
def import_scores_cmd(
    file: Annotated[
        Path, typer.Argument(help="JSONL: {rationale_id, scores: [one number in [0, 1] per sentence]}.")
    ],
    rationales: Annotated[str, typer.Option("--rationales", help="The scored rationales, NAME or NAME@vN.")],
    output: OutputOpt,
    scorer: Annotated[
        Optional[str],
        typer.Option("--scorer", help="What scored them, recorded as the teacher (default: import:FILENAME).",
                     show_default=False),
    ] = None,
    skip_invalid: SkipOpt = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import sentence scores from any scorer (a programmatic verifier, another pipeline).

    A line scores one rationale: one number in [0, 1] per sentence, in order. Optional "problem_id" and
    "sentences" (texts) are checked against the rationale. Rationales without a line become failed rows
    ("no score imported", counted as missing) that ppo leaves out.

    Example: ares-data import-scores checker.jsonl --rationales rats -o rats-checked --scorer checker:v1"""
    from ..import_scores import import_scores

    s = get_store(store)
    parent = s.resolve_kind(rationales, "rationales")
    with ProgressBar("import scores", quiet=_quiet(as_json)) as progress:
        v = import_scores(s, output, file, parent, scorer=scorer, skip_invalid=skip_invalid,
                          progress=progress)
    report(v, as_json)
