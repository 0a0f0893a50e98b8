"""`ares-data segment`: see exactly what the segmenter does."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, TextIO

import typer

from ..errors import InputError
from ..segment import drop_repeats, segment

app = typer.Typer()


@app.command("segment")
def segment_cmd(
    file: Annotated[
        str, typer.Argument(help="JSON-lines file with a 'text' field, plain text lines, or '-' (stdin).")
    ] = "-",
    field: Annotated[str, typer.Option(help="JSON field holding the text.")] = "text",
    repeats: Annotated[
        bool,
        typer.Option("--drop-repeats/--keep-repeats",
                     help="Drop sentences repeating an earlier one (as the original ARES code did); the "
                     "dropped ones are listed under 'dropped'."),
    ] = False,
) -> None:
    """Split texts into sentences with exact character offsets, one JSON line per input line.

    Output: {"text": ..., "sentences": [{"text": ..., "start": ..., "end": ...}, ...]} per input.

    The characters of text from start to end are exactly the sentence: the same sentences the datasets store.

    Lines starting with '{' are read as JSON objects; other non-empty lines are segmented as plain text.

    Example: echo '{"text": "Dr. Smith measured 9.8 m/s. It fell."}' | ares-data segment
    """
    for text in _texts(file, field):
        sents = segment(text)
        record: dict[str, object] = {"text": text}
        if repeats:
            sents, dropped = drop_repeats(sents)
            record["dropped"] = [s.as_dict() for s in dropped]
        record["sentences"] = [s.as_dict() for s in sents]
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")


def _texts(file: str, field: str) -> Iterator[str]:
    if file == "-":
        yield from _read(sys.stdin, "<stdin>", field)
        return
    path = Path(file)
    if not path.is_file():
        raise InputError("file not found", file=file)
    with open(path, encoding="utf-8") as stream:
        yield from _read(stream, file, field)


def _read(stream: TextIO, name: str, field: str) -> Iterator[str]:
    lineno = 0
    try:
        for lineno, line in enumerate(stream, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if not line.lstrip().startswith("{"):
                yield line
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"malformed JSON ({exc.msg} at column {exc.colno})", file=name,
                                 row=lineno) from None
            if not isinstance(obj.get(field), str):
                raise InputError("missing or non-string text", file=name, row=lineno, field=field,
                                 hint="choose the field with --field NAME")
            yield obj[field]
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason})", file=name, row=lineno + 1) from None
