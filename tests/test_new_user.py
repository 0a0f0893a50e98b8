"""Issue 12: what a new user trips over (exit codes, lost fields, messages), each through the CLI."""

from __future__ import annotations

from tests.helpers import train


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_train_help_names_the_train_extra() -> None:
    res = train(["--help"])
    assert res.exit_code == 0
    assert "pip install 'ares-toolkit[train]'" in _flat(res.stdout)
