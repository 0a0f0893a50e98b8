"""`ares-data ingest scienceqa|aokvqa|jsonl` and `ares-data import-rationales`: data in, datasets out."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..store import Version
from .common import (
    JsonOpt,
    OutputOpt,
    StoreOpt,
    console,
    emit_json,
    get_store,
    published_message,
)
from .progress import ProgressBar

app = typer.Typer()
ingest_app = typer.Typer(
    help="Turn ScienceQA, A-OKVQA or your own JSONL into a versioned problems dataset.", no_args_is_help=True
)
app.add_typer(ingest_app, name="ingest")

SkipOpt = Annotated[
    bool,
    typer.Option(
        "--skip-invalid",
        help="Skip bad rows and list them (with reasons) in the manifest instead of failing.",
    ),
]
OutsideOpt = Annotated[
    bool,
    typer.Option(
        "--allow-outside-images",
        help="Read image paths that lead outside the input's folder (../, absolute paths, symlinks out); "
        "refused by default so no other file of this machine ends up in the dataset.",
    ),
]
SplitFilterOpt = Annotated[
    Optional[list[str]],
    typer.Option("--split", help="Only ingest this split (repeat for several), e.g. --split train."),
]


def _quiet(as_json: bool) -> bool:
    """No bar for --json or when stderr is not a terminal (logs, CI, tests): it would only add noise."""
    return as_json or not sys.stderr.isatty()


def summary(v: Version) -> dict[str, Any]:
    """The manifest facts a script needs after publishing."""
    m = v.manifest
    return {
        "ref": v.ref,
        "name": v.name,
        "version": m["version"],
        "kind": v.kind,
        "path": str(v.path),
        "rows": m["rows"],
        "reused": v.reused,
        "fingerprint": v.fingerprint,
        "parents": m["parents"],
        "params": m["params"],
        "counts": m["counts"],
        "skipped": m.get("skipped", []),
    }


def report(v: Version, as_json: bool) -> None:
    if as_json:
        emit_json(summary(v))
        return
    c = console()
    c.print(published_message(v))
    counts = {k: n for k, n in v.manifest["counts"].items() if n}
    if counts:
        c.print("  " + ", ".join(f"{k}={n}" for k, n in counts.items()))
    if v.manifest.get("skipped"):
        c.print(
            f"  skipped {v.manifest['counts'].get('skipped', 0)} invalid rows; "
            f"reasons: ares-data show {v.ref}"
        )


def _ingest(
    source: Any, output: str, store: Path | None, skip_invalid: bool, splits: list[str] | None, as_json: bool
) -> Version:
    from ..sources import ingest

    with ProgressBar(f"ingest {source.source}", quiet=_quiet(as_json)) as progress:
        return ingest(
            get_store(store), output, source, skip_invalid=skip_invalid, splits=splits, progress=progress
        )


@ingest_app.command("scienceqa")
def ingest_scienceqa(
    path: Annotated[
        Path, typer.Argument(help="Official ScienceQA folder (problems.json) or HF parquet files.")
    ],
    output: OutputOpt,
    split: SplitFilterOpt = None,
    skip_invalid: SkipOpt = False,
    allow_outside: OutsideOpt = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ingest ScienceQA (official files or the Hugging Face parquet layout), images included.

    Example: ares-data ingest scienceqa ScienceQA/data -o sqa --split train --split val"""
    from ..sources import open_scienceqa

    source = open_scienceqa(path, allow_outside_images=allow_outside)
    report(_ingest(source, output, store, skip_invalid, split, as_json), as_json)


@ingest_app.command("aokvqa")
def ingest_aokvqa(
    file: Annotated[Path, typer.Argument(help="A-OKVQA annotation JSON, e.g. aokvqa_v1p0_val.json.")],
    output: OutputOpt,
    images: Annotated[
        Optional[Path],
        typer.Option(
            "--images", help="COCO folder holding <split>2017/<image_id:012d>.jpg (omit: no images)."
        ),
    ] = None,
    split: Annotated[
        Optional[str],
        typer.Option("--split", help="The file's split (default: from records or the file name)."),
    ] = None,
    skip_invalid: SkipOpt = False,
    allow_outside: OutsideOpt = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ingest the official A-OKVQA annotations with their COCO images.

    Example: ares-data ingest aokvqa aokvqa_v1p0_val.json --images coco -o aok"""
    from ..sources import AOKVQAFile

    source = AOKVQAFile(file, images, split, allow_outside_images=allow_outside)
    report(_ingest(source, output, store, skip_invalid, None, as_json), as_json)


@ingest_app.command("jsonl")
def ingest_jsonl(
    file: Annotated[Path, typer.Argument(help="JSON lines, one problem per line.")],
    output: OutputOpt,
    mapping: Annotated[
        Optional[list[str]],
        typer.Option(
            "--map",
            help="COLUMN=FIELD (repeatable): read a problems column from another field, e.g. "
            "--map question=q --map answer=label. Columns: problem_id question choices answer "
            "answer_index context image reference_rationale subject grade split.",
        ),
    ] = None,
    source_name: Annotated[
        str, typer.Option("--source-name", help="Value of the `source` column.")
    ] = "jsonl",
    default_split: Annotated[
        str, typer.Option("--default-split", help="Split for rows that have none.")
    ] = "train",
    images_root: Annotated[
        Optional[Path],
        typer.Option("--images-root", help="Folder image paths are relative to (default: the file's)."),
    ] = None,
    split: SplitFilterOpt = None,
    skip_invalid: SkipOpt = False,
    allow_outside: OutsideOpt = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ingest your own problems from JSONL with a field mapping.

    Example: ares-data ingest jsonl mine.jsonl -o mine --map question=q --map answer=label"""
    from ..sources import JsonlFile, parse_mapping

    source = JsonlFile(
        file,
        parse_mapping(mapping or []),
        source_name=source_name,
        default_split=default_split,
        images_root=images_root,
        allow_outside_images=allow_outside,
    )
    report(_ingest(source, output, store, skip_invalid, split, as_json), as_json)


@app.command("import-rationales")
def import_rationales_cmd(
    file: Annotated[
        Path, typer.Argument(help="JSONL: {problem_id, text, sample_index?, generator?, round?}.")
    ],
    problems: Annotated[str, typer.Option("--problems", help="The problems dataset, NAME or NAME@vN.")],
    output: OutputOpt,
    drop_repeats: Annotated[
        bool,
        typer.Option("--drop-repeats", help="Leave repeated sentences out (listed in dropped_sentences)."),
    ] = False,
    generator: Annotated[
        str, typer.Option("--generator", help="Generator name for lines that have none.")
    ] = "imported",
    round_: Annotated[int, typer.Option("--round", help="Round for lines that have none.", min=0)] = 0,
    skip_invalid: SkipOpt = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import model-generated rationales, segmented into sentences with exact offsets.

    Example: ares-data import-rationales rationales.jsonl --problems sqa -o rats --drop-repeats"""
    from ..rationales import import_rationales

    s = get_store(store)
    parent = s.resolve_kind(problems, "problems")
    with ProgressBar("import rationales", quiet=_quiet(as_json)) as progress:
        v = import_rationales(
            s,
            output,
            file,
            parent,
            generator=generator,
            round=round_,
            drop_repeats=drop_repeats,
            skip_invalid=skip_invalid,
            progress=progress,
        )
    report(v, as_json)
