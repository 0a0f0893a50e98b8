"""Hostile-input checks shared by the sources and `import-rationales`; each failure names the field.

* Image paths from the data (`../../x.png`, an absolute path, a problem id of `../../../in`, a symlink
  pointing out) must resolve inside the folders they are relative to, or any file of the machine would be
  embedded into the dataset (and uploaded by `push`). `--allow-outside-images` lifts the check.
* A JSON line nested too deeply for the parser, a number with more digits than Python reads, and strings
  holding lone surrogates (`"\\ud800"`: valid JSON, but not encodable as UTF-8, so Arrow cannot store them)
  are reported with the field they are in.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..schema import LONE_SURROGATE as _SURROGATE
from ..schema import LONE_SURROGATE_ERROR

ALLOW_OUTSIDE_FLAG = "--allow-outside-images"


def image_roots(*folders: Path | None) -> tuple[Path, ...]:
    """The folders image paths may resolve into, resolved once (symlinks followed), duplicates removed."""
    return tuple(dict.fromkeys(f.resolve() for f in folders if f is not None))


def is_inside(path: Path, roots: Sequence[Path]) -> bool:
    """Whether `path`, with `..` and symlinks resolved, lies inside one of the (resolved) `roots`."""
    try:
        real = path.resolve()
    except (OSError, ValueError, RuntimeError):  # a NUL byte in the name, a symlink loop
        return False
    return any(real == root or real.is_relative_to(root) for root in roots)


def usable_image(path: Path | None, roots: Sequence[Path], allow_outside: bool) -> bool:
    """An image file an ingest may read (and hash): it exists and is inside `roots` (or that is allowed)."""
    return path is not None and (allow_outside or is_inside(path, roots)) and path.is_file()


def check_image_inside(path: Path, value: str, roots: Sequence[Path], where: Any, field: str,
                       allow_outside: bool) -> Path:
    """`path` (made from the data's `value`) when it stays inside `roots`, else InputError naming the row
    (`where`: the source's `Where`, with `file` and `row`)."""
    if allow_outside or is_inside(path, roots):
        return path
    try:
        path.resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte in the name, a symlink loop
        raise InputError(f"image path {value!r:.200} is not a usable file name ({exc})", file=where.file,
                         row=where.row, field=field) from None
    folders = " or ".join(str(r) for r in roots)
    raise InputError(
        f"image path {value!r:.200} leads outside {folders}: refused, so no file from "
        "elsewhere on this machine ends up in the dataset", file=where.file, row=where.row, field=field,
        hint=f"fix the path, or pass {ALLOW_OUTSIDE_FLAG} if you trust this input's paths",
    )


def surrogate_field(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string (value or key) in `value` holding a lone surrogate, else None."""
    if isinstance(value, str):
        return (path or "(value)") if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and _SURROGATE.search(key):
                return here
            found = surrogate_field(item, here)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = surrogate_field(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def check_text(value: Any, *, file: str, row: int | str, path: str = "") -> None:
    """InputError naming the field when a string in `value` holds a lone surrogate."""
    field = surrogate_field(value, path)
    if field is not None:
        raise InputError(LONE_SURROGATE_ERROR, file=file, row=row, field=field)


def _structure(raw: str) -> Iterator[tuple[int, int, str | None]]:
    """(position, depth after it, current top-level key) for each bracket and each top-level `:` of a JSON
    object text; strings and their escapes are skipped. A plain scan, for error paths only."""
    depth, key, last_string = 0, None, None
    in_string = escaped = False
    start = 0
    for i, ch in enumerate(raw):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
                last_string = raw[start:i] if depth == 1 else last_string
        elif ch == '"':
            in_string, start = True, i + 1
        elif ch == ":" and depth == 1:
            key = last_string
            yield i, depth, key
        elif ch in "[{":
            depth += 1
            yield i, depth, key
        elif ch in "]}":
            depth -= 1
            yield i, depth, key


def deep_field(raw: str, depth_limit: int = 200) -> str | None:
    """The top-level key of a JSON object text under which nesting passes `depth_limit` (None if it never
    does, or not under a key)."""
    return next((key for _, depth, key in _structure(raw) if depth > depth_limit), None)


def field_at(raw: str, pos: int) -> str | None:
    """The top-level key whose value holds position `pos` of a JSON object text (None before any key)."""
    found = None
    for i, depth, key in _structure(raw):
        if i > pos:
            break
        found = key if depth >= 1 else None
    return found


def long_number_field(raw: str) -> str | None:
    """The top-level key of the first number too long for Python to read (`sys.get_int_max_str_digits`)."""
    limit = sys.get_int_max_str_digits() or 0
    m = re.search(rf"\d{{{limit + 1},}}", raw) if limit else None
    return field_at(raw, m.start()) if m else None
