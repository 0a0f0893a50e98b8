"""`ares-data stats`: numbers checked against hand-computed values on a small lineage."""

from __future__ import annotations

from pathlib import Path

import pytest

from ares_data.store import Store
from ares_data.testing.lineage import build_lineage
from tests.helpers import data


@pytest.fixture
def lineage(store_dir: Path) -> dict:
    return build_lineage(Store(store_dir))


def _expected_scores(version) -> tuple[list[float], int]:
    ds = version.load()
    flat = [s for row in ds if row["status"] == "ok" for s in row["scores"]]
    return flat, sum(1 for row in ds if row["status"] != "ok")


def test_stats_scores_json(lineage: dict) -> None:
    r = data(["stats", "scores", "--json"])
    assert r.exit_code == 0, r.output
    st = r.json()
    flat, failed = _expected_scores(lineage["scores"])
    assert st["kind"] == "scores" and st["rows"] == 18 and st["failed"] == failed == 2
    assert st["failure_rate"] == round(2 / 18, 4)
    assert st["failure_reasons"] == {"unparseable reply": 2}
    assert st["sentences"] == len(flat) and sum(st["histogram"]["counts"]) == len(flat)
    assert st["score"]["mean"] == pytest.approx(sum(flat) / len(flat), abs=1e-4)
    expected_bins = [0] * 10
    for s in flat:
        expected_bins[min(9, int(round(s * 10, 3)))] += 1  # 0.7 goes to [0.7, 0.8), 1.0 to the last bin
    assert st["histogram"]["counts"] == expected_bins
    first = [row["scores"][0] for row in lineage["scores"].load() if row["status"] == "ok"]
    pos1 = st["by_position"][0]
    assert pos1["position"] == 1 and pos1["n"] == len(first)
    assert pos1["mean"] == pytest.approx(sum(first) / len(first), abs=1e-4)
    assert len(st["by_position"]) == 3
    # samples 0 and 2 of each problem have the same text: 6 of 18 rows repeat an earlier rationale
    assert st["duplicate_rationale_rate"] == round(6 / 18, 4)
    ds = lineage["scores"].load()
    assert st["tokens"]["input"] == sum(ds["input_tokens"]) and st["cost_usd"] == pytest.approx(0.0018)


def test_stats_by_subject_and_plot(lineage: dict, tmp_path: Path) -> None:
    png = tmp_path / "scores.png"  # the folder must exist (tests/test_new_user.py)
    r = data(["stats", "scores@v1", "--by", "subject", "--plot", png, "--json"])
    assert r.exit_code == 0, r.output
    groups = {g["subject"]: g for g in r.json()["by"]["groups"]}
    assert set(groups) == {"natural science", "social science", "language science"}
    assert sum(g["rows"] for g in groups.values()) == 18
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    assert Image.open(png).size[0] > 400
    r = data(["stats", "scores"])  # the table view
    assert r.exit_code == 0 and "mean by position" in r.stdout and "unparseable reply" in r.stdout
    assert "[0.9, 1.0] " in r.stdout and "[0.8, 0.9) " in r.stdout  # the last bin holds the 1.0 scores


def test_stats_corrections_edit_rates(lineage: dict) -> None:
    r = data(["stats", "fixes", "--by", "grade", "--json"])
    assert r.exit_code == 0, r.output
    st = r.json()
    assert st["failed"] == 3
    ok = [row for row in lineage["corrections"].load() if row["status"] == "ok"]
    kept, edited = sum(x["kept"] for x in ok), sum(x["edited"] for x in ok)
    assert st["edits"]["sentences"]["edited"] == edited
    assert st["edits"]["rates"]["edited"] == round(edited / (kept + edited), 4)
    assert st["edits"]["changed_rate"] == 1.0
    assert [g["grade"] for g in st["by"]["groups"]] == ["grade1", "grade2", "grade3"]


def test_stats_problems_and_exports(lineage: dict, store_dir: Path) -> None:
    from ares_data.export import export_dpo, export_prm

    store = Store(store_dir)
    export_prm(store, "scores", "prm", threshold=0.5)
    export_dpo(store, "scores", "dpo")
    st = data(["stats", "sqa", "--json"]).json()
    assert st["with_image"] == 3 and sum(st["subjects"].values()) == 6
    prm = data(["stats", "prm", "--json"]).json()
    labels = [x for row in store.load("prm") for x in row["labels"]]
    assert prm["steps"] == len(labels) and prm["positive_label_rate"] == round(sum(labels) / len(labels), 4)
    dpo = data(["stats", "dpo"])
    assert dpo.exit_code == 0 and "mean score margin: 0." in dpo.stdout
    rats = data(["stats", "rats", "--json"]).json()
    assert rats["sentences_per_rationale"] == 3.0 and rats["duplicate_rationale_rate"] == round(6 / 18, 4)


def test_stats_errors(lineage: dict) -> None:
    r = data(["stats", "scores", "--by", "colour"])
    assert r.exit_code == 2 and "not a problems column" in r.stderr and "subject" in r.stderr
    r = data(["stats", "fixes", "--plot", "x.png"])
    assert r.exit_code == 2 and "needs a scores dataset" in r.stderr
    r = data(["stats", "nope"])
    assert r.exit_code == 1 and "no dataset named 'nope'" in r.stderr
    assert data(["stats", "--help"]).exit_code == 0
