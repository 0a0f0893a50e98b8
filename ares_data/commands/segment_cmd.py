"""`ares-data segment`: see exactly what the segmenter does."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError
from ..segment import segment

app = typer.Typer()


@app.command("segment")
def segment_cmd(
    file: Annotated[str, typer.Argument(help="JSON-lines file with a 'text' field, plain text lines, or '-'.")]
    = "-",
    field: Annotated[str, typer.Option(help="JSON field holding the text.")] = "text",
) -> None:
    """Split texts into sentences with exact character offsets, one JSON line per input line.

    Each output line is {"text": ..., "sentences": [{"text", "start", "end"}, ...]} with
    text[start:end] == sentence: the same sentences the datasets store.
    """
    if file == "-":
        stream, name = sys.stdin, "<stdin>"
    else:
        path = Path(file)
        if not path.is_file():
            raise InputError("file not found", file=file)
        stream, name = open(path, encoding="utf-8"), file
    with stream:
        for lineno, line in enumerate(stream, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            text = line
            if line.lstrip().startswith("{"):
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"malformed JSON ({exc.msg})", file=name, row=lineno) from None
                if not isinstance(obj.get(field), str):
                    raise InputError("missing or non-string text", file=name, row=lineno, field=field)
                text = obj[field]
            sents = [s.as_dict() for s in segment(text)]
            sys.stdout.write(json.dumps({"text": text, "sentences": sents}, ensure_ascii=False) + "\n")
