"""`ares-data export sft|prm|dpo`: TRL-ready exports, each published as a versioned dataset."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from .common import JsonOpt, StoreOpt, console, emit_json, err_console, get_store, published_message

app = typer.Typer()
export_app = typer.Typer(help="Export scores/corrections for other trainers (TRL SFT, PRM, DPO).",
                         no_args_is_help=True)
app.add_typer(export_app, name="export")

ImagesOpt = Annotated[
    Optional[bool],
    typer.Option("--images/--no-images", show_default=False,
                 help="Keep the problem images (default: when any problem has one). Text-only models "
                      "need --no-images: TRL treats an `images` column as vision data."),
]
NameOpt = Annotated[str, typer.Option("-o", "--output", help="Name of the dataset to publish.")]


class PairBy(str, Enum):
    score = "score"
    answer = "answer"


def _working(what: str) -> object:
    """A spinner on stderr while an export runs (nothing when stderr is not a terminal)."""
    return err_console().status(f"{what} ...")


def _done(version: object, as_json: bool) -> None:
    from ..export import summary

    if as_json:
        emit_json(summary(version))
        return
    console().print(published_message(version))
    out = summary(version)
    if out["counts"]:
        console().print("skipped: " + ", ".join(f"{k}={v}" for k, v in sorted(out["counts"].items())))
    if "images_left_out" in out:
        left = out["images_left_out"]
        console().print(f"note: {left['rows']} rows have a problem image, not exported: {left['why']}",
                        markup=False, highlight=False)


@export_app.command("sft")
def sft_cmd(
    corrections: Annotated[str, typer.Argument(help="Corrections dataset, NAME or NAME@vN.")],
    output: NameOpt,
    conversational: Annotated[bool, typer.Option("--conversational",
                                                 help="Write `messages` (user/assistant) instead of "
                                                      "prompt/completion.")] = False,
    images: ImagesOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Corrected rationales as SFT records for TRL SFTTrainer (failed corrections are skipped).

    Example: ares-data export sft fixes -o sft --no-images"""
    from ..export import export_sft

    with _working(f"exporting {corrections} as sft"):
        v = export_sft(get_store(store), corrections, output, conversational=conversational, images=images)
    _done(v, as_json)


@export_app.command("prm")
def prm_cmd(
    scores: Annotated[str, typer.Argument(help="Scores dataset, NAME or NAME@vN.")],
    output: NameOpt,
    threshold: Annotated[float, typer.Option(help="A sentence is labelled good when score >= threshold.",
                                             min=0.0, max=1.0)] = 0.5,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sentence scores as TRL stepwise supervision (prompt, completions, labels) for PRM training.
    Text only (TRL's PRMTrainer has no vision path): problem images are left out, and the manifest says so.

    Example: ares-data export prm rats-scores -o prm --threshold 0.5"""
    from ..export import export_prm

    with _working(f"exporting {scores} as prm"):
        v = export_prm(get_store(store), scores, output, threshold=threshold)
    _done(v, as_json)


@export_app.command("dpo")
def dpo_cmd(
    scores: Annotated[str, typer.Argument(help="Scores dataset, NAME or NAME@vN.")],
    output: NameOpt,
    pair_by: Annotated[PairBy, typer.Option("--pair-by", help="score: highest vs lowest mean sentence "
                                            "score; answer: correct vs incorrect final answer.")]
    = PairBy.score,
    min_margin: Annotated[float, typer.Option("--min-margin", help="With --pair-by score: keep a pair only "
                                              "when the mean scores differ by more than this.")] = 0.0,
    images: ImagesOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Preference pairs per problem (prompt, chosen, rejected, images) for TRL DPOTrainer.

    Example: ares-data export dpo rats-scores -o dpo --pair-by score --min-margin 0.1"""
    from ..export import export_dpo

    with _working(f"exporting {scores} as dpo"):
        v = export_dpo(get_store(store), scores, output, pair_by=pair_by.value, min_margin=min_margin,
                       images=images)
    _done(v, as_json)
