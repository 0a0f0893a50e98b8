"""Reading checks, `ares-data verify`, damaged manifests in `ls`, parent cycles, `ares-data gc` (issue 11)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from ares_data.integrity import DATA_FILE, IntegrityError
from ares_data.store import Store, Version
from ares_data.store_gc import HOST
from ares_data.testing.lineage import build_lineage, rationale_rows, score_rows
from tests.helpers import data


@pytest.fixture
def lineage(store_dir: Path) -> dict[str, Version]:
    return build_lineage(Store(store_dir))


def _big_scores(store: Store, lineage: dict[str, Version]) -> Version:
    """2,100 score rows: more than one Arrow record batch."""
    rows = score_rows(rationale_rows(700, 3))
    return store.publish("big", "scores", rows, parents=[lineage["rationales"]])


def _cut_after_first_batch(version: Version) -> None:
    path = version.path / DATA_FILE
    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_stream(source)
        first, schema = reader.read_next_batch(), reader.schema
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as w:
        w.write_batch(first)
    path.write_bytes(sink.getvalue().to_pybytes())


def _edit_manifest(version: Version, **changes: object) -> None:
    path = version.path / "manifest.json"
    m = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            m.pop(key, None)
        else:
            m[key] = value
    path.write_text(json.dumps(m))


def _flip_text_byte(version: Version, needle: bytes) -> None:
    path = version.path / DATA_FILE
    blob = bytearray(path.read_bytes())
    at = blob.index(needle)
    blob[at] ^= 0x01
    stat = path.stat()
    path.write_bytes(bytes(blob))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even the modification time is unchanged


def test_truncated_data_is_refused_by_every_reader(store_dir: Path, lineage: dict) -> None:
    big = _big_scores(Store(store_dir), lineage)
    assert set(big.manifest["files"]) == {DATA_FILE, "state.json", "dataset_info.json"}
    _cut_after_first_batch(big)
    for args in (["stats", "big"], ["export", "prm", "big", "-o", "prm"], ["head", "big"], ["show", "big"],
                 ["verify", "big@v1"]):
        r = data(args)
        assert r.exit_code == 1, (args, r.output)
        assert "big@v1 is damaged" in r.stderr or "big@v1: DAMAGED" in r.stdout, (args, r.output)
        assert "bytes, the manifest says" in r.output, (args, r.output)
    assert Store(store_dir).versions("prm") == []


def test_old_versions_without_file_sizes_load_and_are_checked_by_row_count(store_dir: Path,
                                                                          lineage: dict) -> None:
    big = _big_scores(Store(store_dir), lineage)
    _edit_manifest(big, files=None)  # as published before `files` was recorded
    assert data(["head", "big", "-n", "1"]).exit_code == 0
    assert data(["stats", "big", "--json"]).json()["rows"] == 2100
    _cut_after_first_batch(big)
    for args in (["stats", "big"], ["head", "big"], ["verify", "big"]):
        r = data(args)
        assert r.exit_code == 1, (args, r.output)
        assert "the data has 1000 rows, the manifest says 2100" in r.output, (args, r.output)
        assert "Traceback" not in r.stderr and "unexpected" not in r.stderr
    r = data(["export", "prm", "big", "-o", "prm"])  # the fingerprint check before it becomes a parent
    assert r.exit_code == 1 and "big@v1 is damaged: the data no longer matches its fingerprint" in r.stderr


def test_schema_change_is_refused(store_dir: Path, lineage: dict) -> None:
    scores = lineage["scores"]
    _edit_manifest(scores, files=None)
    path = scores.path / DATA_FILE
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_stream(source).read_all()
    i = table.schema.get_field_index("scores")
    table = table.set_column(i, "scores", table.column("scores").cast(pa.list_(pa.float64())))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    path.write_bytes(sink.getvalue().to_pybytes())
    r = data(["stats", "scores"])
    assert r.exit_code == 1 and "scores@v1 is damaged: schema differs from kind 'scores': 'scores' is " \
        "list<item: double>, expected list<item: float>" in r.stderr, r.stderr
    with pytest.raises(IntegrityError, match="schema differs"):
        Store(store_dir).load("scores")


def test_flipped_byte_is_caught_before_the_version_becomes_a_parent(store_dir: Path, lineage: dict) -> None:
    rats = lineage["rationales"]
    _flip_text_byte(rats, b"We look at the options")
    assert data(["head", "rats", "-n", "1"]).exit_code == 0  # cheap checks pass: same size, rows, schema
    r = data(["score", "rats", "--teacher", "reference", "-o", "rescored"])
    assert r.exit_code == 1, r.output
    assert "rats@v1 is damaged: the data no longer matches its fingerprint" in r.stderr
    assert "ares-data verify rats@v1" in r.stderr
    assert Store(store_dir).versions("rescored") == [] and not (store_dir / "rescored").exists()
    r = data(["verify", "rats"])
    assert r.exit_code == 1 and "rats@v1: DAMAGED" in r.stdout
    assert "no longer matches its fingerprint" in r.stdout and "Error: 1 of 1 version(s) damaged" in r.stderr
    r = data(["verify", "--all", "--json"])
    assert r.exit_code == 1
    status = {x["ref"]: x["ok"] for x in r.json()}
    assert status == {"sqa@v1": True, "rats@v1": False, "scores@v1": True, "fixes@v1": True}


def test_verify_checks_the_recorded_parent_fingerprints(store_dir: Path, lineage: dict) -> None:
    r = data(["verify", "scores@v1", "--json"])
    assert r.exit_code == 0
    assert r.json() == [{"ref": "scores@v1", "kind": "scores", "rows": 18, "problems": [], "ok": True}]
    _edit_manifest(lineage["rationales"], fingerprint="0" * 64)
    r = data(["verify", "scores@v1"])
    assert r.exit_code == 1
    assert "parent rats@v1 has fingerprint 0000000000000000…, but this version was made from " \
        f"{lineage['rationales'].fingerprint[:16]}…" in r.stdout
    r = data(["verify"])
    assert r.exit_code == 2 and "--all" in r.stderr


def test_a_damaged_manifest_does_not_hide_the_other_datasets(store_dir: Path, lineage: dict) -> None:
    _edit_manifest(lineage["corrections"], kind=None)
    r = data(["ls", "--json"])
    assert r.exit_code == 0, r.output
    by_name = {x["name"]: x for x in r.json()}
    assert set(by_name) == {"sqa", "rats", "scores", "fixes"}
    assert by_name["fixes"]["damaged"] == {"v1": "the manifest has no 'kind'"}
    assert by_name["scores"]["damaged"] == {} and by_name["scores"]["kind"] == "scores"
    r = data(["ls"])
    assert r.exit_code == 0 and "v1 (damaged)" in r.stdout
    assert "damaged: fixes@v1: the manifest has no 'kind'" in r.stderr
    r = data(["show", "fixes"])
    assert r.exit_code == 1 and "fixes@v1 is damaged: the manifest has no 'kind'" in r.stderr
    (lineage["problems"].path / "manifest.json").write_text("{not json")
    r = data(["ls", "--json"])
    assert r.exit_code == 0
    assert "unreadable manifest" in {x["name"]: x for x in r.json()}["sqa"]["damaged"]["v1"]
    # a new build of the damaged name is published next to it, never reused from it
    again = build_lineage(Store(store_dir))["corrections"]
    assert again.ref == "fixes@v2" and not again.reused


def _cli(store_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ARES_STORE": str(store_dir)}
    return subprocess.run([sys.executable, "-m", "ares_data.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_parent_cycles_end_the_lineage_walk(store_dir: Path, lineage: dict) -> None:
    scores, rats = lineage["scores"], lineage["rationales"]
    _edit_manifest(rats, parents=[scores.as_parent()])  # rats -> scores -> rats: no problems parent
    r = _cli(store_dir, "stats", "scores", "--by", "subject")
    assert r.returncode == 1 and "'scores@v1' has no problems dataset among its parents" in r.stderr, r.stderr
    r = _cli(store_dir, "score", "rats", "--teacher", "reference", "-o", "again")
    assert r.returncode == 1 and "'rats@v1' has no problems dataset among its parents" in r.stderr, r.stderr
    assert data(["card", "scores"]).exit_code == 0


def test_failed_commands_leave_no_dataset_folder(store_dir: Path, lineage: dict, tmp_path: Path) -> None:
    bad = tmp_path / "rats.jsonl"
    bad.write_text(json.dumps({"problem_id": "p0", "text": "Fine."}) + "\n" +
                   json.dumps({"problem_id": "nope", "text": "Unknown problem."}) + "\n")
    r = data(["import-rationales", bad, "--problems", "sqa", "-o", "newrats"])
    assert r.exit_code == 1 and "unknown problem_id" in r.stderr
    assert not (store_dir / "newrats").exists()
    assert not list((store_dir / ".tmp").iterdir())


def test_gc_removes_what_killed_writers_left_anywhere(store_dir: Path, lineage: dict) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    leftovers = [store_dir / ".tmp" / f"{HOST}-{dead}-0a0a0a0a",  # killed writer
                 store_dir / "rats" / f".tmp-{HOST}-{dead}-0b0b0b0b"]  # killed writer of an older version
    running = store_dir / ".tmp" / f"{HOST}-{os.getpid()}-0c0c0c0c"
    elsewhere = store_dir / ".tmp" / "ffffffff-1-0d0d0d0d"
    for p in [*leftovers, running, elsewhere]:
        p.mkdir(parents=True)
        (p / DATA_FILE).write_bytes(b"partial")
    empty = store_dir / "empty"
    empty.mkdir()
    (empty / ".lock").touch()
    r = data(["gc", "--dry-run", "--json"])
    assert r.exit_code == 0 and not any(x["removed"] for x in r.json())
    assert {Path(x["path"]) for x in r.json()} == {*leftovers, running, elsewhere, empty}
    r = data(["gc", "--json"])
    assert r.exit_code == 0, r.output
    removed = {Path(x["path"]) for x in r.json() if x["removed"]}
    assert removed == {*leftovers, empty} and not any(p.exists() for p in removed)
    assert running.exists() and elsewhere.exists()
    reasons = {Path(x["path"]): x["reason"] for x in r.json()}
    assert "still running" in reasons[running] and "another host" in reasons[elsewhere]
    assert data(["verify", "--all"]).exit_code == 0  # published versions untouched
    r = data(["gc"])
    assert r.exit_code == 0 and "0 removed, 2 kept" in r.stdout


@pytest.mark.parametrize("cmd", ["verify", "gc", "ls"])
def test_help(cmd: str) -> None:
    r = data([cmd, "--help"])
    assert r.exit_code == 0 and "Example" in r.stdout


def test_the_read_check_of_a_new_version_needs_no_datasets_import(store_dir: Path, lineage: dict) -> None:
    """The schema is compared with the manifest's `columns`: `stats` keeps its fast start (no `datasets`)."""
    assert lineage["scores"].manifest["columns"]["scores"] == "list<item: float>"
    code = ("import sys; from ares_data.store import Store; from ares_data.stats import read_table; "
            f"read_table(Store({str(store_dir)!r}).resolve('scores')); print('datasets' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_verify_checks_rows_against_the_kind_invariants(store_dir: Path) -> None:
    """A version written by other code (here: straight through the store) that breaks its kind's rules."""
    store = Store(store_dir)
    lineage = build_lineage(store)
    rows = score_rows(list(lineage["rationales"].load()))
    rows[4]["scores"] = [1.5] + rows[4]["scores"][1:]
    store.publish("odd", "scores", rows, parents=[lineage["rationales"]])
    r = data(["verify", "odd", "--json"])
    assert r.exit_code == 1
    assert r.json()[0]["problems"] == [f"{DATA_FILE}, row 5, field 'scores[0]': 1.5 is outside [0, 1]"]
    assert data(["verify", "scores"]).exit_code == 0
