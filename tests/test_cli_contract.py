"""The CLI contract, checked on EVERY command of `ares-data`, `ares-train` and `ares`.

The command trees are introspected, so commands added later are covered without editing this file:
`--help` exits 0 and describes the command, an unknown option is a usage error (exit 2), the shared
options keep their names, `import ares_data` (every module) leaves torch out, errors are one `Error:` line
unless ARES_DEBUG=1, and the console scripts are installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from tests.helpers import Result, invoke

ROOT = Path(__file__).resolve().parents[1]


def _apps() -> dict[str, Any]:
    import cli
    from ares_data.cli import app as data_app
    from ares_train.cli import app as train_app

    return {"ares-data": data_app, "ares-train": train_app, "ares": cli.app}


def _walk(cmd: Any, path: list[str]) -> list[tuple[list[str], Any]]:
    """Every command and group below `cmd` (typer may vendor click, so duck-type on `.commands`)."""
    found = [(path, cmd)]
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        if not sub.hidden:
            found += _walk(sub, [*path, name])
    return found


def _all_commands() -> list[tuple[str, list[str], Any]]:
    return [(prog, path, cmd) for prog, app in _apps().items()
            for path, cmd in _walk(typer.main.get_command(app), [])]


COMMANDS = _all_commands()
IDS = [" ".join([prog, *path]) for prog, path, _ in COMMANDS]


def run(prog: str, args: list[str], **kw: Any) -> Result:
    return invoke(_apps()[prog], args, **kw)


def test_the_trees_are_walked() -> None:
    names = set(IDS)
    expected = {"ares-data", "ares-train", "ares", "ares-data segment", "ares data segment", "ares version"}
    assert expected <= names
    assert len(names) == len(IDS)


@pytest.mark.parametrize(("prog", "path", "cmd"), COMMANDS, ids=IDS)
def test_help_exits_0_and_describes_the_command(prog: str, path: list[str], cmd: Any) -> None:
    description = (cmd.help or cmd.short_help or "").strip()
    assert description, f"{' '.join([prog, *path])} has no help text (docstring or help=)"
    res = run(prog, [*path, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage:" in res.stdout
    first_words = " ".join(description.split()[:4])
    assert first_words in " ".join(res.stdout.split()), f"description {first_words!r} not shown"


@pytest.mark.parametrize(("prog", "path", "cmd"), COMMANDS, ids=IDS)
def test_unknown_option_is_a_usage_error(prog: str, path: list[str], cmd: Any) -> None:
    res = run(prog, [*path, "--no-such-option-xyz"])
    assert res.exit_code == 2, res.output
    assert "no-such-option-xyz" in res.output
    assert "Traceback" not in res.output and "unexpected" not in res.output


@pytest.mark.parametrize(("prog", "path", "cmd"), COMMANDS, ids=IDS)
def test_shared_options_keep_their_names(prog: str, path: list[str], cmd: Any) -> None:
    for param in cmd.params:
        if param.name == "output":
            assert {"-o", "--output"} <= set(param.opts), f"{param.opts}: outputs are named with -o/--output"
        elif param.name == "store":
            assert param.opts == ["--store"] and param.envvar == "ARES_STORE"
        elif param.name == "json":
            assert param.opts == ["--json"] and param.is_flag


def test_root_groups_take_the_global_store_option() -> None:
    for prog in ("ares-data", "ares-train"):
        root = typer.main.get_command(_apps()[prog])
        assert any(p.name == "store" for p in root.params), prog


IMPORT_ALL = """
import importlib, json, pkgutil, sys
import ares_data
names = [m.name for m in pkgutil.walk_packages(ares_data.__path__, "ares_data.")
         if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
heavy = sorted(k for k in sys.modules if k.split(".")[0] in ("torch", "trl", "peft", "accelerate"))
print(json.dumps({"modules": names, "heavy": heavy}))
"""


def test_importing_every_ares_data_module_leaves_torch_out() -> None:
    proc = subprocess.run([sys.executable, "-c", IMPORT_ALL], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "ares_data.segment" in report["modules"] and "ares_data.cli" in report["modules"]
    assert report["heavy"] == [], f"ares_data imported {report['heavy'][:5]} (torch belongs to ares_train)"


def test_cli_start_up_leaves_datasets_out() -> None:
    # `import datasets` costs ~1 s; `ares-data --help`, `ls` and `stats` should not pay it at start-up
    code = ("import sys, ares_data.cli; "
            "print(sorted({k.split('.')[0] for k in sys.modules} & {'datasets', 'pandas'}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"importing ares_data.cli imported {proc.stdout.strip()}"


def _script(name: str) -> str:
    path = shutil.which(name)
    assert path, f"console script {name} is not installed (pip install -e .)"
    return path


def test_console_scripts_exist_and_show_help() -> None:
    for name in ("ares-data", "ares-train", "ares"):
        proc = subprocess.run([_script(name), "--help"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "Usage:" in proc.stdout and name in proc.stdout


def test_errors_are_one_line_unless_ares_debug(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.jsonl")
    env = {k: v for k, v in os.environ.items() if k != "ARES_DEBUG"}
    proc = subprocess.run([_script("ares-data"), "segment", missing], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 1
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and "missing.jsonl" in error_lines[0]
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([_script("ares-data"), "segment", missing], capture_output=True, text=True,
                          timeout=120, env={**env, "ARES_DEBUG": "1"})
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr and "InputError" in proc.stderr


def test_in_process_error_path_matches_the_console_script(tmp_path: Path) -> None:
    res = run("ares", ["data", "segment", str(tmp_path / "nope.jsonl")])
    assert res.exit_code == 1 and res.stderr.startswith("Error: ") and "Traceback" not in res.stderr


@pytest.mark.parametrize("cmd", [["ls"], ["show"], ["head"], ["segment"], ["ingest", "scienceqa"],
                                 ["ingest", "aokvqa"], ["ingest", "jsonl"], ["import-rationales"],
                                 ["export", "sft"], ["export", "prm"], ["export", "dpo"], ["stats"], ["push"],
                                 ["pull"], ["card"]])
def test_data_command_help_has_an_example(cmd: list[str]) -> None:
    r = invoke(_apps()["ares-data"], [*cmd, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "Example:" in r.stdout, r.stdout
    assert f"ares-data {' '.join(cmd)}" in r.stdout.split("Example:")[1], r.stdout


def test_teacher_commands_share_the_engine_options() -> None:
    """score, correct and judge take the same request-engine options: names, help and defaults."""
    engine = {"base_url", "no_images", "concurrency", "rpm", "tpm", "timeout", "max_attempts", "max_tokens",
              "max_cost", "log"}
    cmds = {" ".join(path): cmd for prog, path, cmd in COMMANDS
            if prog == "ares-data" and path in (["score"], ["correct"], ["judge"])}
    seen = {name: {p.name: (p.opts, p.help, p.default) for p in cmd.params if p.name in engine}
            for name, cmd in cmds.items()}
    assert set(seen) == {"score", "correct", "judge"}
    assert all(set(opts) == engine for opts in seen.values()), {k: engine - set(v) for k, v in seen.items()}
    assert seen["judge"] == seen["score"] == seen["correct"]


@pytest.mark.parametrize(("prog", "path", "cmd"), COMMANDS, ids=IDS)
def test_command_lists_show_whole_sentences_and_no_empty_defaults(
    prog: str, path: list[str], cmd: Any
) -> None:
    """A group's command list shows each command's first sentence as one line (no docstring line break
    cutting it mid-sentence in a narrow terminal); no option help ends in '(default: None)'."""
    if path and cmd.short_help is not None:
        assert "\n" not in cmd.short_help and cmd.short_help.rstrip().endswith((".", "!", "?", ")")), \
            cmd.short_help
    for param in cmd.params:
        text = getattr(param, "help", None) or ""
        assert "(default: None)" not in text and text.count("(default") <= 1, f"{param.name}: {text}"
