from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import load_from_disk

from ares_data import teachers
from ares_data.judging import make_pairs, summarize
from ares_data.store import Store
from ares_data.tasks.base import extract_data
from ares_data.teachers.base import Reply, Request, Teacher
from ares_data.testing.lineage import problem_rows, rationale_rows

from .helpers import data


class AlwaysATeacher(Teacher):
    """A judge with total position bias: it always prefers whatever is shown as Option A."""

    provider = "always-a"
    default_model = "biased"
    seen: list[dict] = []

    async def send(self, request: Request) -> Reply:
        AlwaysATeacher.seen.append(extract_data(request.messages[0]["content"][-1]["text"]))
        return Reply(text='{"preferred": "A", "reason": "first"}', data={"preferred": "A", "reason": "first"},
                     input_tokens=10, output_tokens=5, stop_reason="end_turn")


class FlakyTeacher(Teacher):
    """Answers nonsense for problem p1 (even after the retry), a fair judgment otherwise."""

    provider = "flaky"
    default_model = "v0"

    async def send(self, request: Request) -> Reply:
        block = extract_data(request.messages[0]["content"][-1]["text"])
        if block is not None and block["question"].startswith("Problem p1:"):
            return Reply(text="I cannot decide.", data=None, input_tokens=5, output_tokens=3,
                         stop_reason="stop")
        return Reply(text='{"preferred": "tie", "reason": "same"}', data=None, input_tokens=5,
                     output_tokens=3, stop_reason="stop")


@pytest.fixture
def fake_judges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(teachers.REGISTRY, "always-a", f"{__name__}:AlwaysATeacher")
    monkeypatch.setitem(teachers.REGISTRY, "flaky", f"{__name__}:FlakyTeacher")
    AlwaysATeacher.seen = []


def _publish(store_dir: Path, n: int = 8) -> None:
    s = Store(store_dir)
    problems = problem_rows(n)
    for p in problems:
        p["question"] = f"Problem {p['problem_id']}: {p['question']}"  # distinct requests per problem
    problems = s.publish("sqa", "problems", problems)
    rows = rationale_rows(n, 2)
    good = [r for r in rows if r["sample_index"] == 0]  # states the right answer
    bad = [{**r, "sample_index": 0} for r in rows if r["sample_index"] == 1]  # states a wrong answer
    s.publish("good", "rationales", good, parents=[problems])
    s.publish("bad", "rationales", bad[:-1], parents=[problems])  # one problem left unpaired


def test_always_a_judge_gives_half_after_swapping(store_dir: Path, fake_judges: None) -> None:
    _publish(store_dir)
    r = data(["judge", "good", "bad", "--teacher", "always-a", "-o", "cmp", "--json"])
    assert r.exit_code == 0, r.output
    out = r.json()
    summary = out["summary"]
    assert summary["pairs"] == 7 and summary["judgments"] == 14 and summary["failed"] == 0
    assert summary["rates"] == {"win": 0.5, "tie": 0.0, "loss": 0.5}
    assert summary["consistent_rates"]["tie"] == 1.0  # the judge flipped with the order on every pair
    assert summary["position_a_preferred"] == 1.0
    assert out["pairing"]["unpaired_a"] == 1
    # both orders really were shown: the text shown as Option A alternates between the datasets
    shown = {(d["question"], d["option_a"]["text"], d["option_b"]["text"]) for d in AlwaysATeacher.seen}
    assert len(shown) == 14 and len(AlwaysATeacher.seen) == 14
    ds = load_from_disk(out["path"])
    assert sorted(set(ds["order"])) == ["ab", "ba"] and set(ds["winner"]) == {"a", "b"}
    manifest = json.loads((Path(out["path"]) / "manifest.json").read_text())
    assert manifest["kind"] == "judgments" and manifest["summary"]["rates"]["win"] == 0.5
    assert [p["ref"] for p in manifest["parents"]] == ["good@v1", "bad@v1"]


def test_reference_judge_prefers_correct_rationales(store_dir: Path) -> None:
    _publish(store_dir)
    r = data(["judge", "good", "bad", "--teacher", "reference", "--json"])
    assert r.exit_code == 0, r.output
    summary = r.json()["summary"]
    assert summary["rates"]["win"] == 1.0 and summary["consistent_rates"]["win"] == 1.0
    assert summary["ci95"]["win"] == [1.0, 1.0]
    # reversed roles: B wins everything
    r2 = data(["judge", "bad", "good", "--teacher", "reference", "--json", "-o", "rev"])
    assert r2.json()["summary"]["rates"]["loss"] == 1.0


def test_failed_judgments_are_recorded_per_row(store_dir: Path, fake_judges: None) -> None:
    _publish(store_dir)
    r = data(["judge", "good", "bad", "--teacher", "flaky", "--json"])
    assert r.exit_code == 0, r.output
    out = r.json()
    ds = load_from_disk(out["path"])
    failed = [row for row in ds if row["status"] == "failed"]
    assert {row["problem_id"] for row in failed} == {"p1"} and len(failed) == 2
    assert all(row["error"] and row["winner"] == "" for row in failed)
    assert out["summary"]["failed"] == 2 and out["summary"]["rates"]["tie"] == 1.0


def test_table_output_and_errors(store_dir: Path) -> None:
    _publish(store_dir)
    r = data(["judge", "good", "bad", "--teacher", "reference"])
    assert r.exit_code == 0 and "win (A)" in r.stdout and "published judgments@v1" in r.stdout
    assert data(["judge", "good", "sqa", "--teacher", "reference"]).exit_code == 2  # not rationales
    assert "Error:" in data(["judge", "good", "nope", "--teacher", "reference"]).stderr
    assert data(["judge", "--help"]).exit_code == 0


def test_pairing_and_bootstrap_interval() -> None:
    a = [{"problem_id": str(i), "sample_index": s, "rationale_id": f"a{i}{s}"}
         for i in range(4) for s in (0, 1)]
    b = [{"problem_id": str(i), "sample_index": 1, "rationale_id": f"b{i}"} for i in range(4)]
    items, counts = make_pairs(a, b)
    assert counts["pairs"] == 4 and {i["sample_index"] for i in items} == {1}
    items, counts = make_pairs(a, b, by="problem")
    assert counts["pairs"] == 4 and {i["a"]["sample_index"] for i in items} == {0}
    one, _ = make_pairs(a, b, orders=("random",))
    assert len(one) == 4 and {i["order"] for i in one} <= {"ab", "ba"}
    rows = [{"pair_id": str(i), "status": "ok", "winner": "a" if i < 6 else "b", "preferred": "A"}
            for i in range(10)]
    s = summarize(rows)
    assert s["rates"]["win"] == 0.6
    lo, hi = s["ci95"]["win"]
    assert lo < 0.6 < hi and 0.0 <= lo and hi <= 1.0
    assert summarize(rows) == s  # deterministic


@pytest.mark.parametrize("spec", ["anthropic:claude-3-haiku-20240307", "openai:gpt-4o-mini"])
def test_judge_through_the_sdks_and_the_cache(store_dir: Path, spec: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from ares_data.testing.teacher_server import serve

    _publish(store_dir)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with serve() as srv:
        base = srv.anthropic_base_url if spec.startswith("anthropic") else srv.openai_base_url
        r = data(["judge", "good", "bad", "--teacher", spec, "--base-url", base, "--json"])
        assert r.exit_code == 0, r.output
        assert r.json()["summary"]["rates"]["win"] == 1.0  # the server answers with the reference rule
        assert srv.stats.model_requests == 14
        again = data(["judge", "good", "bad", "--teacher", spec, "--base-url", base, "--json"])
        assert again.json()["ref"] == r.json()["ref"] and srv.stats.model_requests == 14  # all cached


def test_judge_takes_the_engine_options_of_score(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ares_data.testing.teacher_server import serve

    _publish(store_dir)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-judgekey1234567890")
    log = store_dir / "judge-log.jsonl"
    with serve() as srv:
        args = ["judge", "good", "bad", "--teacher", "openai:gpt-4o-mini", "--base-url", srv.openai_base_url,
                "--json", "--max-attempts", "2", "--tpm", "100000", "--concurrency", "4"]
        r = data([*args, "--max-tokens", "300", "--log", str(log)])
        assert r.exit_code == 0, r.output
        assert srv.stats.recent and all(b["max_tokens"] == 300 for b in srv.stats.recent)
        man = Store(store_dir).resolve(r.json()["ref"]).manifest
        assert man["params"]["max_tokens"] == 300
        events = [json.loads(line) for line in log.read_text().splitlines()]
        assert sum(e["event"] == "reply" for e in events) == 14
        assert b"sk-test-judgekey" not in log.read_bytes()
        other = data(args)  # the default budget is another request and another build
        assert other.exit_code == 0, other.output
        assert srv.stats.model_requests == 28 and other.json()["ref"] != r.json()["ref"]
        assert Store(store_dir).resolve(other.json()["ref"]).manifest["params"]["max_tokens"] == 256
