"""Test helpers: run a CLI in-process through the same error path as the console scripts."""

from __future__ import annotations

import io
import json
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from typing import Any


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> Any:
        return json.loads(self.stdout)


def invoke(
    app: Any, args: list[str], *, env: dict[str, str] | None = None, stdin: str | None = None
) -> Result:
    """Run `app` like its console script would (exit codes, `Error:` lines), capturing output."""
    from ares_data.cli import run_app

    out, err = io.StringIO(), io.StringIO()
    old_env = dict(os.environ)
    old_stdin = sys.stdin
    try:
        if env:
            os.environ.update(env)
        if stdin is not None:
            sys.stdin = io.StringIO(stdin)
        with redirect_stdout(out), redirect_stderr(err):
            code = run_app(app, [str(a) for a in args])
    finally:
        os.environ.clear()
        os.environ.update(old_env)
        sys.stdin = old_stdin
    return Result(code, out.getvalue(), err.getvalue())


def data(args: list[str], **kw: Any) -> Result:
    from ares_data.cli import app

    return invoke(app, args, **kw)


def train(args: list[str], **kw: Any) -> Result:
    from ares_train.cli import app

    return invoke(app, args, **kw)


def umbrella(args: list[str], **kw: Any) -> Result:
    from cli import app

    return invoke(app, args, **kw)
