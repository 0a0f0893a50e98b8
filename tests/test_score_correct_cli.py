"""`ares-data score / correct / batch` through the official SDKs against the fake teacher server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ares_data.store import Store
from ares_data.testing.lineage import problem_rows, rationale_rows
from ares_data.testing.teacher_server import serve
from tests.helpers import data

ANTHROPIC = "anthropic:claude-3-haiku-20240307"
OPENAI = "openai:gpt-4o-mini"
KEYS = {"ANTHROPIC_API_KEY": "sk-ant-api03-TESTKEYaaaaBBBBccccDDDD1234",
        "OPENAI_API_KEY": "sk-TESTKEYopenai5678xyz"}


@pytest.fixture(scope="module")
def server() -> Iterator:
    with serve(retry_after=0.05, hang_s=1.0) as srv:
        yield srv


@pytest.fixture
def srv(server, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201
    server.reset()
    server.set_faults(fault_rate=0.0, latency_ms=0.0)
    for k, v in KEYS.items():
        monkeypatch.setenv(k, v)
    return server


def make_rationales(store_dir: Path, n_problems: int = 6, k: int = 3, unique: bool = False) -> Store:
    """Problems (every other one with an image) and k rationales each; the synthetic rationales repeat
    (as ARES samples do), `unique=True` makes all but the last sample of each problem distinct."""
    s = Store(store_dir)
    problems = s.publish("sqa", "problems", problem_rows(n_problems), command=["test"])
    rats = rationale_rows(n_problems, k)
    if unique:
        for j, r in enumerate(rats):
            if r["sample_index"] < k - 1:
                extra = f" Step {j} checks it."
                r["sentences"] = [*r["sentences"], {"text": extra[1:], "start": len(r["text"]) + 1,
                                                    "end": len(r["text"]) + len(extra)}]
                r["text"] += extra
    s.publish("rats", "rationales", rats, parents=[problems], command=["test"])
    return s


def score(*args: str, srv=None, teacher: str = ANTHROPIC) -> object:  # noqa: ANN001
    base = srv.anthropic_base_url if teacher.startswith("anthropic") else srv.openai_base_url
    return data(["score", "rats", "--teacher", teacher, "--base-url", base, *args])


def rows(store: Store, ref: str) -> list[dict]:
    return store.load(ref).to_list()


@pytest.mark.parametrize("teacher", [ANTHROPIC, OPENAI])
def test_score_through_each_sdk(store_dir: Path, srv, teacher: str) -> None:  # noqa: ANN001
    s = make_rationales(store_dir)
    r = score("--json", srv=srv, teacher=teacher)
    assert r.exit_code == 0, r.output
    out = r.json()
    got, rats = rows(s, out["ref"]), rows(s, "rats")
    assert [g["rationale_id"] for g in got] == [x["rationale_id"] for x in rats]
    pairs = zip(got, rats, strict=True)
    assert all(g["status"] == "ok" and len(g["scores"]) == len(x["sentences"]) for g, x in pairs)
    assert all(0.0 <= v <= 1.0 for g in got for v in g["scores"])
    st = srv.stats
    assert st.images > 0 and st.unauthenticated == 0
    # de-duplication: identical requests were sent once and fanned out to every row asking them
    assert st.model_requests == out["sent"] == len(got) - out["cached"] and out["cached"] > 0
    man = s.resolve(out["ref"]).manifest
    assert man["teacher"] == teacher and man["counts"]["ok"] == len(got)
    assert man["parents"][0]["ref"] == "rats@v1"
    assert man["usage"]["input_tokens"] == sum(g["input_tokens"] for g in got) > 0
    assert man["cost_usd"] == pytest.approx(sum(g["cost_usd"] for g in got)) and man["cost_usd"] > 0


def test_correct_and_no_images(store_dir: Path, srv) -> None:  # noqa: ANN001
    s = make_rationales(store_dir)
    r = data(["correct", "rats", "--teacher", OPENAI, "--base-url", srv.openai_base_url, "--no-images",
              "-o", "fixes", "--json"])
    assert r.exit_code == 0, r.output
    got = rows(s, "fixes")
    assert len(got) == 18 and all(g["status"] == "ok" and g["corrected"] for g in got)
    assert all(g["kept"] + g["edited"] + g["added"] >= 1 for g in got)
    assert srv.stats.images == 0
    assert s.resolve("fixes").manifest["params"]["images"] is False


def test_fault_mix_every_row_ok_or_failed_with_reason(store_dir: Path, srv) -> None:  # noqa: ANN001
    s = make_rationales(store_dir, n_problems=15, k=4, unique=True)  # 60 rows, >= 45 distinct requests
    srv.set_faults(fault_rate=0.2, seed=3, faults=["429", "529", "500", "hang", "malformed", "wronglen",
                                                  "drop", "truncate", "badjson"])
    r = score("--timeout", "0.4", "--max-attempts", "4", "--json", srv=srv)
    assert r.exit_code == 0, r.output
    got, rats = rows(s, "rats-scores"), rows(s, "rats")
    assert [g["rationale_id"] for g in got] == [x["rationale_id"] for x in rats]
    faults = srv.stats.faults
    assert {"429", "529", "500", "hang"} & set(faults) and sum(faults.values()) >= 5
    for g, x in zip(got, rats, strict=True):
        assert g["status"] in ("ok", "failed")
        if g["status"] == "ok":
            assert len(g["scores"]) == len(x["sentences"])
        else:
            assert g["error"] and g["scores"] == []
    assert any(g["attempts"] > 1 for g in got)


@pytest.mark.parametrize("teacher", [ANTHROPIC, OPENAI])
def test_a_rejected_request_is_a_failed_row_not_a_stopped_run(store_dir: Path, srv, teacher: str) -> None:  # noqa: ANN001
    s = make_rationales(store_dir, unique=True)  # the first row's request is asked by no other row
    srv.enqueue(["400"])  # the first request the server sees is refused (a too-long prompt, a bad image)
    r = score("--json", "--concurrency", "1", srv=srv, teacher=teacher)
    assert r.exit_code == 0, r.output
    got = rows(s, r.json()["ref"])
    failed = [g for g in got if g["status"] == "failed"]
    assert len(failed) == 1 and "HTTP 400: injected fault 400" in failed[0]["error"]
    assert failed[0]["attempts"] == 1 and failed[0]["scores"] == []
    assert len(got) == 18 and r.json()["failed"] == 1
    srv.enqueue(["401"])  # a rejected key stops the run: nothing is published
    r = score("--json", "-o", "other", "--max-tokens", "777", srv=srv, teacher=teacher)  # new requests
    assert r.exit_code == 1 and "401" in r.stderr and "other" not in s.names()


def test_max_tokens_is_sent_and_decides_the_build(store_dir: Path, srv) -> None:  # noqa: ANN001
    s = make_rationales(store_dir, n_problems=2, k=1)
    r = score("--max-tokens", "3000", "--json", srv=srv)
    assert r.exit_code == 0, r.output
    assert srv.stats.recent and all(b["max_tokens"] == 3000 for b in srv.stats.recent)
    first = r.json()
    assert s.resolve(first["ref"]).manifest["params"]["max_tokens"] == 3000
    again = score("--max-tokens", "3000", "--json", srv=srv).json()  # the same build: same version, cached
    assert again["ref"] == first["ref"] and again["sent"] == 0
    other = score("--json", srv=srv).json()  # the default budget is another request and another version
    assert other["ref"] != first["ref"] and other["sent"] > 0
    assert s.resolve(other["ref"]).manifest["params"]["max_tokens"] == 1024
    assert data(["score", "rats", "--teacher", "reference", "--max-tokens", "0"]).exit_code == 2


def test_the_loop_and_the_cli_publish_the_same_version(store_dir: Path, tmp_path: Path) -> None:
    from ares_train.loop.config import LoopConfig, LoopSettings
    from ares_train.loop.stages import Context, teacher_stage

    s = make_rationales(store_dir, n_problems=2, k=2)
    settings = LoopSettings(LoopConfig(problems="sqa", teacher="reference"), {}, {}, {}, {})
    ctx = Context(s, settings, tmp_path, prefix="rats")
    cli = data(["score", "rats", "--teacher", "reference", "--json"]).json()
    out, metrics = teacher_stage(ctx, "score", "rats@v1")
    assert out == {"scores": cli["ref"]} and metrics["reused"]
    out, metrics = teacher_stage(ctx, "correct", "rats@v1")  # and the other way round
    assert not metrics["reused"]
    cli = data(["correct", "rats", "--teacher", "reference", "--json"]).json()
    assert cli["ref"] == out["corrections"]
    man = s.resolve(out["corrections"]).manifest
    assert man["params"]["max_tokens"] == 1024 and man["counts"]["ok"] == 4 and man["usage"]


def test_a_teacher_that_never_answers_publishes_nothing(store_dir: Path, srv) -> None:  # noqa: ANN001
    import socket

    s = make_rationales(store_dir, n_problems=2, k=2)
    with socket.socket() as sock:  # a port nobody listens on: a wrong --base-url, a server that is down
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    r = data(["score", "rats", "--teacher", ANTHROPIC, "--base-url", dead, "--max-attempts", "1"])
    assert r.exit_code == 1 and "no request got an answer" in r.stderr and "connection failed" in r.stderr
    assert "rats-scores" not in s.names()


def test_dry_run_sends_nothing_then_counts_the_cache(store_dir: Path, srv) -> None:  # noqa: ANN001
    make_rationales(store_dir)
    r = score("--dry-run", "--json", srv=srv)
    assert r.exit_code == 0, r.output
    plan = r.json()
    assert srv.stats.model_requests == 0 and not Store(store_dir).versions("rats-scores")
    assert plan["rows"] == 18 and plan["requests"] == 18 - plan["duplicates"] and plan["est_cost_usd_max"] > 0
    assert score(srv=srv).exit_code == 0
    assert srv.stats.model_requests == plan["requests"]
    again = score("--dry-run", "--json", srv=srv).json()
    assert again["requests"] == 0 and again["cached"] == plan["requests"]


def test_max_cost_stops_cleanly_and_a_rerun_resumes(store_dir: Path, srv, tmp_path: Path) -> None:  # noqa: ANN001
    s = make_rationales(store_dir, n_problems=10, k=2)
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"claude-3-haiku-20240307": {"input": 10.0, "output": 10.0}}))
    r = score("--prices", str(prices), "--max-cost", "0.05", "--concurrency", "2", srv=srv)
    assert r.exit_code == 1 and "max-cost" in r.stderr and "rerun" in r.stderr
    assert not s.versions("rats-scores")  # nothing partial published
    first = srv.stats.model_requests
    assert 0 < first < 20
    r = score("--prices", str(prices), "--json", srv=srv)
    assert r.exit_code == 0, r.output
    out = r.json()
    assert out["from_cache"] == first and srv.stats.repeated_answers() == 0
    assert out["spent_usd"] < out["cost_usd"]


def test_retry_failed_rerequests_only_failed_rows(store_dir: Path, srv) -> None:  # noqa: ANN001
    s = make_rationales(store_dir)
    srv.enqueue(["500"])  # the first request fails, and with --max-attempts 1 its rows fail
    assert score("--concurrency", "1", "--max-attempts", "1", "--max-tokens", "900", srv=srv).exit_code == 0
    v1 = rows(s, "rats-scores@v1")
    failed = [g for g in v1 if g["status"] == "failed"]
    assert len(failed) >= 1 and "gave up after 1 attempts" in failed[0]["error"] and not failed[0]["scores"]
    before = srv.stats.model_requests
    r = data(["score", "--retry-failed", "rats-scores@v1", "--teacher", ANTHROPIC,
              "--base-url", srv.anthropic_base_url, "--json"])
    assert r.exit_code == 0, r.output
    assert r.json()["ref"] == "rats-scores@v2"
    v2 = rows(s, "rats-scores@v2")
    assert all(g["status"] == "ok" for g in v2)
    kept = [b for a, b in zip(v1, v2, strict=True) if a["status"] == "ok"]
    assert [a for a in v1 if a["status"] == "ok"] == kept
    assert srv.stats.model_requests - before == 1  # one distinct failed request re-sent
    parents = [p["ref"] for p in s.resolve("rats-scores@v2").manifest["parents"]]
    assert parents == ["rats@v1", "rats-scores@v1"]
    # the retried rows keep the earlier version's reply budget unless --max-tokens says otherwise
    assert srv.stats.recent[-1]["max_tokens"] == 900
    assert s.resolve("rats-scores@v2").manifest["params"]["max_tokens"] == 900


def test_batch_submit_status_collect(store_dir: Path, srv) -> None:  # noqa: ANN001
    s = make_rationales(store_dir)
    r = score("--batch", "--json", srv=srv)
    assert r.exit_code == 0, r.output
    sub = r.json()
    assert (store_dir / ".batches" / f"{sub['batch_id']}.json").is_file()
    st = data(["batch", "status", sub["batch_id"], "--json"])
    assert st.exit_code == 0 and st.json()["state"] == "ended", st.output
    col = data(["batch", "collect", sub["batch_id"], "-o", "bscores", "--json"])
    assert col.exit_code == 0, col.output
    got = rows(s, "bscores")
    assert len(got) == 18 and all(g["status"] == "ok" for g in got)
    assert s.resolve("bscores").manifest["batch"]["id"] == sub["batch_id"]
    live = score("--json", srv=srv).json()  # everything is cached now: same rows, full-price comparison
    assert [g["scores"] for g in rows(s, live["ref"])] == [g["scores"] for g in got]
    assert data(["batch", "status", "nosuchbatch"]).exit_code == 1


def test_no_key_leaks_into_store_cache_or_output(store_dir: Path, srv) -> None:  # noqa: ANN001
    make_rationales(store_dir)
    srv.set_faults(fault_rate=0.3, seed=1, faults=["429", "500"])  # retries and errors in the log too
    log = store_dir / "teacher-log.jsonl"
    outs = [score("--log", str(log), "--json", "--max-attempts", "8", srv=srv),
            score("--batch", srv=srv, teacher=OPENAI),
            data(["correct", "rats", "--teacher", OPENAI, "--base-url", srv.openai_base_url])]
    assert all(o.exit_code == 0 for o in outs), [o.output for o in outs]
    blobs = [o.output.encode() for o in outs] + [p.read_bytes() for p in store_dir.rglob("*") if p.is_file()]
    assert any(b"sqa" in b for b in blobs)
    for key in KEYS.values():
        assert not any(key.encode() in b for b in blobs), "an API key reached the store, cache or output"
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert sum(e["event"] == "reply" for e in events) == outs[0].json()["sent"] > 0
    assert {"retry"} <= {e["event"] for e in events} and all(e["key"] for e in events)


def test_missing_key_and_bad_input_are_one_line_errors(store_dir: Path, srv, monkeypatch) -> None:  # noqa: ANN001
    make_rationales(store_dir)
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    r = score(srv=srv)
    assert r.exit_code == 1 and "ANTHROPIC_API_KEY" in r.stderr and "Traceback" not in r.output
    r = data(["score", "sqa", "--teacher", "reference"])
    assert r.exit_code == 2 and "rationales" in r.stderr
    r = data(["score", "nope", "--teacher", "reference"])
    assert r.exit_code == 1 and "no dataset named 'nope'" in r.stderr


def test_reference_teacher_offline_and_help(store_dir: Path) -> None:
    s = make_rationales(store_dir)
    r = data(["score", "rats", "--teacher", "reference", "--json"])
    assert r.exit_code == 0, r.output
    assert r.json()["ok"] == 18 and rows(s, "rats-scores")[0]["teacher"] == "reference:heuristic-v1"
    again = data(["score", "rats", "--teacher", "reference", "--json"]).json()
    assert again["reused"] and again["sent"] == 0
    for cmd in (["score"], ["correct"], ["batch", "status"], ["batch", "collect"]):
        h = data([*cmd, "--help"], env={"COLUMNS": "200"})
        assert h.exit_code == 0 and "Example: ares-data " + " ".join(cmd) in h.stdout
    assert "heuristic" in data(["score", "--help"], env={"COLUMNS": "200"}).stdout


def test_invalid_reply_is_asked_again_stating_the_error(store_dir: Path, srv) -> None:  # noqa: ANN001
    s = make_rationales(store_dir)
    srv.enqueue(["wronglen"])  # the first reply misses a score
    r = score("--concurrency", "1", "--json", srv=srv)
    assert r.exit_code == 0 and r.json()["ok"] == 18, r.output
    first = rows(s, "rats-scores")[0]
    assert first["attempts"] == 2 and len(first["scores"]) == 3
    follow_up = [b for b in srv.stats.recent if len(b["messages"]) == 3]
    assert len(follow_up) == 1 and "not usable" in json.dumps(follow_up[0]["messages"][2])


def test_custom_prompt_is_versioned_by_its_hash(store_dir: Path, tmp_path: Path) -> None:
    from ares_data.tasks.base import PROMPTS_DIR

    s = make_rationales(store_dir)
    prompt = tmp_path / "my_score.txt"
    prompt.write_text((PROMPTS_DIR / "score.txt").read_text() + "\nBe strict.\n")
    assert data(["score", "rats", "--teacher", "reference"]).exit_code == 0
    r = data(["score", "rats", "--teacher", "reference", "--prompt", str(prompt), "-o", "strict"])
    assert r.exit_code == 0, r.output
    default_sha = rows(s, "rats-scores")[0]["prompt_sha"]
    custom_sha = rows(s, "strict")[0]["prompt_sha"]
    assert custom_sha != default_sha and s.resolve("strict").manifest["prompt_sha"] == custom_sha
    assert s.resolve("strict").manifest["prompt_text"].endswith("Be strict.\n")


def test_rationale_without_its_problem_is_an_input_error(store_dir: Path) -> None:
    s = Store(store_dir)
    problems = s.publish("sqa", "problems", problem_rows(2), command=["test"])
    rats = rationale_rows(2, 1)
    rats[1]["problem_id"] = "p-missing"
    s.publish("rats", "rationales", rats, parents=[problems], command=["test"])
    r = data(["score", "rats", "--teacher", "reference"])
    assert r.exit_code == 1 and "row 1" in r.stderr and "p-missing" in r.stderr and "problem_id" in r.stderr
    assert not s.versions("rats-scores")
