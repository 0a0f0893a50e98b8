from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from datasets import load_from_disk

from ares_data.errors import InputError, NotFoundError, UsageError
from ares_data.store import Store, parse_ref

from .helpers import data


def _rationale(i: int, text: str = "A. B.") -> dict:
    return {
        "rationale_id": f"r{i}", "problem_id": f"p{i}", "sample_index": 0, "round": 0, "text": text,
        "sentences": [{"text": "A.", "start": 0, "end": 2}], "dropped_sentences": [],
        "generator": "test", "generator_fingerprint": "", "generation_params": "{}", "prompt": "",
        "token_ids": [],
    }


def test_parse_ref() -> None:
    assert parse_ref("scores") == ("scores", None)
    assert parse_ref("scores@v3") == ("scores", 3)
    assert parse_ref("scores@2") == ("scores", 2)
    with pytest.raises(UsageError):
        parse_ref("../etc@v1")


def test_publish_versions_and_plain_load(store_dir: Path) -> None:
    s = Store(store_dir)
    v1 = s.publish("rats", "rationales", [_rationale(0)], params={"a": 1})
    v2 = s.publish("rats", "rationales", [_rationale(0), _rationale(1)], params={"a": 2}, parents=[v1])
    assert (v1.ref, v2.ref) == ("rats@v1", "rats@v2")
    assert s.resolve("rats").version == 2
    ds = load_from_disk(str(v2.path))  # no ares code needed to read it
    assert ds.num_rows == 2 and ds[1]["rationale_id"] == "r1"
    manifest = json.loads((v2.path / "manifest.json").read_text())
    assert manifest["parents"] == [{"ref": "rats@v1", "kind": "rationales", "fingerprint": v1.fingerprint}]
    assert manifest["rows"] == 2 and manifest["kind"] == "rationales" and manifest["version"] == "v2"


def test_identical_rebuild_reuses_version(store_dir: Path) -> None:
    s = Store(store_dir)
    v1 = s.publish("rats", "rationales", [_rationale(0)], params={"a": 1})
    again = s.publish("rats", "rationales", [_rationale(0)], params={"a": 1})
    assert again.reused and again.version == v1.version
    assert s.versions("rats") == [1]


def test_failed_write_publishes_nothing(store_dir: Path) -> None:
    s = Store(store_dir)
    with pytest.raises(RuntimeError):
        with s.writer("rats", "rationales") as w:
            w.write(_rationale(0))
            raise RuntimeError("crash mid-write")
    assert s.versions("rats") == []
    assert not (store_dir / "rats").exists()  # no empty <store>/<name>/ folder left behind
    assert not list((store_dir / ".tmp").iterdir())
    assert s.names() == []  # the empty folder is not a dataset: not listed, not offered in errors
    with pytest.raises(NotFoundError, match=r"datasets: none"):
        s.resolve("rat")


def test_bad_row_names_row(store_dir: Path) -> None:
    s = Store(store_dir)
    bad = _rationale(0)
    bad["sample_index"] = "zero"
    with pytest.raises(InputError, match="row 1"):
        s.publish("rats", "rationales", [_rationale(1), bad])
    with pytest.raises(NotFoundError):
        s.resolve("rats")


def test_concurrent_writers_get_distinct_versions(store_dir: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from ares_data.store import Store
        i = int(sys.argv[2])
        row = {"rationale_id": f"r{i}", "problem_id": "p", "sample_index": i, "round": 0, "text": "x" * 1000,
               "sentences": [], "dropped_sentences": [], "generator": "g", "generator_fingerprint": "",
               "generation_params": "{}", "prompt": "", "token_ids": list(range(2000))}
        v = Store(sys.argv[1]).publish("same", "rationales", [row] * 300, params={"i": i})
        print(v.ref)
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(store_dir), str(i)], stdout=subprocess.PIPE,
                              text=True) for i in range(2)]
    refs = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert refs == {"same@v1", "same@v2"}
    s = Store(store_dir)
    idx = sorted(s.load(r)[0]["sample_index"] for r in refs)
    assert idx == [0, 1]


def test_killed_writer_leaves_no_visible_version(store_dir: Path) -> None:
    script = textwrap.dedent(
        """
        import os, sys
        from ares_data.store import Store
        s = Store(sys.argv[1])
        with s.writer("killed", "rationales") as w:
            for i in range(50):
                w.write({"rationale_id": str(i), "problem_id": "p", "sample_index": i, "round": 0,
                         "text": "t", "sentences": [], "dropped_sentences": [], "generator": "g",
                         "generator_fingerprint": "", "generation_params": "{}", "prompt": "",
                         "token_ids": []})
            os.kill(os.getpid(), 9)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script, str(store_dir)])
    assert proc.returncode == -9
    assert Store(store_dir).versions("killed") == []
    r = data(["ls", "--json"])
    assert r.exit_code == 0 and r.json() == []
    leftover = list((store_dir / ".tmp").iterdir())
    assert len(leftover) == 1 and not (store_dir / "killed").exists()  # hidden, never a version
    Store(store_dir).publish("other", "rationales", [_rationale(0)])  # the next writer clears it away
    assert not any(p.exists() for p in leftover)


def test_ls_show_head_cli(store_dir: Path) -> None:
    Store(store_dir).publish("rats", "rationales", [_rationale(0), _rationale(1)])
    r = data(["ls", "--json"])
    assert r.exit_code == 0
    assert r.json()[0]["name"] == "rats" and r.json()[0]["rows"] == 2
    r = data(["show", "rats@v1", "--json"])
    assert r.exit_code == 0 and r.json()["manifest"]["kind"] == "rationales"
    assert "sentences" in r.json()["features"]
    r = data(["head", "rats", "-n", "1", "--json"])
    assert r.exit_code == 0 and len(r.json()) == 1 and r.json()[0]["rationale_id"] == "r0"
    r = data(["show", "rats@v9"])
    assert r.exit_code == 1 and r.stderr.startswith("Error: ") and "v9" in r.stderr
    assert "Traceback" not in r.stderr
    r = data(["show", "bad name!"])
    assert r.exit_code == 2
    assert data(["ls", "--store", str(store_dir), "--json"]).json()[0]["name"] == "rats"


def test_head_shows_images_as_their_size_also_inside_lists() -> None:
    from PIL import Image

    from ares_data.commands.store_cmds import _printable

    img = Image.new("RGB", (2, 3))
    out = _printable({"image": img, "images": [img, img], "text": "t", "ids": [1, 2]}, {})
    assert out == {"image": "<image 2x3 RGB>", "images": ["<image 2x3 RGB>"] * 2, "text": "t", "ids": [1, 2]}


def test_wrong_kind_is_a_usage_error_with_the_right_article(store_dir: Path) -> None:
    s = Store(store_dir)
    s.publish("rats", "rationales", [_rationale(0)])
    with pytest.raises(UsageError, match="'rats@v1' is a rationales dataset, but an eval dataset is needed"):
        s.resolve_kind("rats", "eval")
