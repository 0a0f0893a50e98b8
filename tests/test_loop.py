"""`ares-train loop` / `ares-train status` on the shipped sample with a tiny model (real rollout, teacher
engine, PPO, SFT and eval; tiny sizes so the whole file stays well under a minute of CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ares_data.store import Store
from ares_data.testing.teacher_server import serve
from ares_train.loop.config import LoopConfig, LoopSettings, load_loop_settings
from ares_train.loop.run import plan_stages

from .helpers import data, train

ROOT = Path(__file__).resolve().parent.parent
CONFIG = """
[loop]
model = "{model}"
problems = "sqa"
teacher = "{teacher}"
teacher_base_url = "{base_url}"
rounds = {rounds}
schedule = ["rl", "sft"]
limit = 4
eval_split = "test"

[rollout]
k = 2
max_new_tokens = 12
batch_size = 8

[ppo]
ppo_epochs = 1
mini_batch_size = 8
lr = 1e-4
save_checkpoints = false

[sft]
epochs = 1
batch_size = 4
lr = 1e-4
save_steps = 1000

[eval]
max_new_tokens = 8
answer_tokens = 2
limit = 4
"""


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from ares_train.tiny import build_tiny_text_model

    torch.set_num_threads(1)  # a model this small runs fastest on one thread, above all on a busy machine
    return build_tiny_text_model(tmp_path_factory.mktemp("tiny") / "model", vocab_size=300)


def _setup(tmp_path: Path, model: Path, *, teacher: str = "reference", base_url: str = "",
           rounds: int = 2, extra: str = "") -> Path:
    from ares_data.sample import SAMPLE_DIR

    assert data(["ingest", "scienceqa", str(SAMPLE_DIR), "-o", "sqa", "--json"]).exit_code == 0
    cfg = tmp_path / "ares.toml"
    cfg.write_text(CONFIG.format(model=model, teacher=teacher, base_url=base_url, rounds=rounds) + extra)
    return cfg


def run_json_ref(run_dir: Path) -> str:
    return json.loads((run_dir / "run.json").read_text())["reference_model"]


def test_two_round_loop_through_the_cli(store_dir: Path, tmp_path: Path, tiny_model: Path) -> None:
    cfg = _setup(tmp_path, tiny_model)
    run_dir = tmp_path / "run"
    r = train(["loop", "--config", cfg, "--run-dir", run_dir, "--json"])
    assert r.exit_code == 0, r.output
    out = r.json()
    stages = {s["id"]: s for s in out["stages"]}
    assert list(stages) == ["r0-eval", "r1s1-rollout", "r1s1-score", "r1s1-ppo", "r1s2-rollout",
                            "r1s2-correct", "r1s2-sft", "r1-eval", "r2s1-rollout", "r2s1-score", "r2s1-ppo",
                            "r2s2-rollout", "r2s2-correct", "r2s2-sft", "r2-eval"]
    assert all(s["status"] == "done" for s in stages.values())
    # each stage's inputs are the previous stages' outputs
    assert stages["r1s1-score"]["inputs"]["rationales"] == stages["r1s1-rollout"]["outputs"]["rationales"]
    assert stages["r1s1-ppo"]["inputs"]["scores"] == stages["r1s1-score"]["outputs"]["scores"]
    assert stages["r1s1-rollout"]["inputs"]["problems"] == "sqa@v1"
    assert stages["r1s2-rollout"]["inputs"]["model"] == stages["r1s1-ppo"]["outputs"]["model"]
    assert stages["r1s2-sft"]["inputs"]["corrections"] == stages["r1s2-correct"]["outputs"]["corrections"]
    assert stages["r2s1-rollout"]["inputs"]["model"] == stages["r1s2-sft"]["outputs"]["model"]
    assert out["final_model"] == stages["r2s2-sft"]["outputs"]["model"]
    # every artifact is a versioned dataset with parents, or a checkpoint with a manifest
    store = Store(store_dir)
    scores = store.resolve(stages["r2s1-score"]["outputs"]["scores"])
    assert scores.kind == "scores" and scores.manifest["parents"][0]["ref"] == \
        stages["r2s1-rollout"]["outputs"]["rationales"]
    rats = store.resolve(stages["r2s1-rollout"]["outputs"]["rationales"])
    assert rats.load()[0]["round"] == 2 and rats.manifest["rows"] == 8
    for sid in ("r1s1-ppo", "r1s2-sft", "r2s1-ppo", "r2s2-sft"):
        manifest = json.loads((Path(stages[sid]["outputs"]["model"]) / "ares-checkpoint.json").read_text())
        assert manifest["stage"] == sid.split("-")[1]
    # the KL anchor is the run's starting model in every round, and the critic is carried over
    for sid in ("r1s1-ppo", "r2s1-ppo"):
        assert stages[sid]["inputs"]["ref_model"] == str(tiny_model)
        manifest = json.loads((Path(stages[sid]["outputs"]["model"]) / "ares-checkpoint.json").read_text())
        assert manifest["reference"]["model"] == str(tiny_model)
    assert stages["r1s1-ppo"]["inputs"]["value_model"] is None
    assert stages["r2s1-ppo"]["inputs"]["value_model"] == stages["r1s1-ppo"]["outputs"]["value_model"]
    assert run_json_ref(run_dir) == str(tiny_model)
    # round 2 starts from the SFT checkpoint, not from the reference: its KL term is not zero
    log = [json.loads(line) for line in
           (Path(stages["r2s1-ppo"]["outputs"]["model"]) / "ppo_log.jsonl").read_text().splitlines()]
    assert all(abs(m["objective/kl"]) > 1e-4 for m in log)
    assert all(m["reward/total"] != m["reward/sentence"] for m in log)
    assert [r["round"] for r in out["rounds"]] == [0, 1, 2]
    assert out["rounds"][1]["reward"] is not None and out["rounds"][2]["accuracy"] is not None
    run_json = json.loads((run_dir / "run.json").read_text())
    assert run_json["status"] == "done" and run_json["config"]["loop"]["rounds"] == 2
    assert run_json["problems"] == "sqa@v1"  # pinned, so a later ingest cannot change the run

    # status: table and JSON
    st = train(["status", run_dir, "--json"]).json()
    assert st["done"] == st["total"] == 15 and st["current"] is None and st["status"] == "done"
    table = train(["status", run_dir])
    assert table.exit_code == 0 and "r2s2-sft" in table.stdout and "15/15" in table.stdout

    # running it again redoes nothing: same outputs, no new dataset versions
    before = {n: store.versions(n) for n in store.names()}
    again = train(["loop", "--config", cfg, "--run-dir", run_dir, "--json"]).json()
    assert [s["outputs"] for s in again["stages"]] == [s["outputs"] for s in out["stages"]]
    assert {n: store.versions(n) for n in store.names()} == before

    # a different setting in the same run folder is refused; more rounds may extend it
    cfg.write_text(cfg.read_text().replace("k = 2", "k = 3"))
    bad = train(["loop", "--config", cfg, "--run-dir", run_dir])
    assert bad.exit_code == 1 and "different settings" in bad.stderr


@pytest.mark.parametrize(("table", "line", "message"), [
    ("[loop]", "colour = 1", "unknown key 'colour'"),
    ("[ppo]", "klcoef = 0.1", "unknown key 'klcoef' in [ppo]"),
    ("[sft]", "output_dir = 'x'", "'output_dir' in [sft]"),
    ("[sft]", "rationales = 'refs'", "'rationales' in [sft]"),
    ("[extras]", "a = 1", "unknown key 'extras'"),
    ("[eval]", "batch_size = 'two'", "[eval] of"),
])
def test_config_errors_name_the_key(store_dir: Path, tmp_path: Path, table: str, line: str,
                                    message: str) -> None:
    cfg = tmp_path / "ares.toml"
    body = CONFIG.format(model="m", teacher="reference", base_url="", rounds=1)
    if table in body:
        body = body.replace(table + "\n", f"{table}\n{line}\n")
    else:
        body += f"\n{table}\n{line}\n"
    cfg.write_text(body)
    r = train(["loop", "--config", cfg, "--run-dir", tmp_path / "run"])
    assert r.exit_code == 1 and message in r.stderr and str(cfg) in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


def test_schedules_and_ablations() -> None:
    def ids(**kw: object) -> list[str]:
        loop = LoopConfig(model="m", problems="p", **kw)  # type: ignore[arg-type]
        loop.validate()
        return [s.id for s in plan_stages(LoopSettings(loop, {}, {}, {}, {}))]

    assert ids(rounds=1, schedule="rl", eval_split="") == ["r1s1-rollout", "r1s1-score", "r1s1-ppo"]
    assert ids(rounds=1, schedule="sft", eval_initial=False) == [
        "r1s1-rollout", "r1s1-correct", "r1s1-sft", "r1-eval"]
    several = ids(rounds=1, schedule="rl,rl,sft", eval_split="")
    trained = [s for s in several if s.endswith(("ppo", "sft"))]
    assert trained == ["r1s1-ppo", "r1s2-ppo", "r1s3-sft"]
    grpo = ids(rounds=1, schedule="grpo,sft", eval_split="")
    assert grpo[:3] == ["r1s1-rollout", "r1s1-score", "r1s1-grpo"]
    with pytest.raises(Exception, match="steps must be 'rl', 'grpo' or 'sft'"):
        ids(schedule="rl,dpo")


def test_example_config_is_valid() -> None:
    s = load_loop_settings(ROOT / "examples" / "ares.toml")
    assert s.loop.steps() == ["rl", "sft"] and s.ppo["lora_r"] == 64 and s.rollout["k"] == 4


def test_settings_from_flags_only(tmp_path: Path) -> None:
    s = load_loop_settings(None, {"model": "m", "problems": "p", "rounds": 3, "schedule": "sft"})
    assert s.loop.rounds == 3 and s.loop.steps() == ["sft"] and s.ppo == {}
    assert s.sha() == load_loop_settings(None, {"model": "m", "problems": "p", "rounds": 5,
                                                "schedule": "sft"}).sha()  # rounds may grow


def _stage_done(run_dir: Path, stage_id: str) -> bool:
    try:
        manifest = json.loads((run_dir / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return any(s["id"] == stage_id and s["status"] == "done" for s in manifest["stages"])


def _run_and_kill(cfg: Path, run_dir: Path, store_dir: Path, when: Callable[[], bool]) -> None:
    """Start the loop in a child process and SIGKILL it (no clean-up of any kind) once `when()` holds."""
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-fake", "OMP_NUM_THREADS": "1",
           "ARES_STORE": str(store_dir)}
    cmd = [sys.executable, "-m", "ares_train.cli", "loop", "--config", str(cfg), "--run-dir", str(run_dir)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not when() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_killed_loop_resumes_without_resending_teacher_requests(store_dir: Path, tmp_path: Path,
                                                                 tiny_model: Path) -> None:
    with serve() as srv:
        cfg = _setup(tmp_path, tiny_model, teacher="openai:gpt-4o-mini", base_url=srv.openai_base_url,
                     rounds=1)
        run_dir = tmp_path / "run"
        _run_and_kill(cfg, run_dir, store_dir, lambda: _stage_done(run_dir, "r1s1-score"))  # during PPO
        sent_before = srv.stats.model_requests
        assert 0 < sent_before <= 8  # 4 problems x k=2 scored (identical rationales are sent once)
        st = train(["status", run_dir, "--json"]).json()
        assert st["current"] == "r1s1-ppo" and st["done"] == 3
        assert st["active"] is False and "stopped" in train(["status", run_dir]).stdout  # nothing runs it

        key = {"OPENAI_API_KEY": "sk-x"}
        r = train(["loop", "--config", cfg, "--run-dir", run_dir, "--json"], env=key)
        assert r.exit_code == 0, r.output
        stats = srv.stats
        assert stats.repeated_answers() == 0  # no request was answered twice
        stages = {s["id"]: s for s in r.json()["stages"]}
        assert stages["r1s2-correct"]["metrics"]["sent"] == stats.model_requests - sent_before
        # and a complete rerun sends nothing at all
        again = train(["loop", "--config", cfg, "--run-dir", run_dir, "--json"], env=key)
        assert again.exit_code == 0 and srv.stats.model_requests == stats.model_requests


def test_killed_in_the_middle_of_a_teacher_stage(store_dir: Path, tmp_path: Path, tiny_model: Path) -> None:
    """Killed while the scores are half done: the answered half comes from the cache; only a request that
    was in flight at the kill (one, with concurrency 1) can be sent again."""
    with serve(latency_ms=150) as srv:
        cfg = _setup(tmp_path, tiny_model, teacher="openai:gpt-4o-mini", base_url=srv.openai_base_url,
                     rounds=1)
        cfg.write_text(cfg.read_text().replace('eval_split = "test"', 'eval_split = ""\nconcurrency = 1'))
        run_dir = tmp_path / "run"
        _run_and_kill(cfg, run_dir, store_dir, lambda: srv.stats.model_requests >= 3)
        answered = srv.stats.model_requests
        assert train(["status", run_dir, "--json"]).json()["current"] == "r1s1-score"
        r = train(["loop", "--config", cfg, "--run-dir", run_dir, "--json"], env={"OPENAI_API_KEY": "sk-x"})
        assert r.exit_code == 0, r.output
        score = next(s for s in r.json()["stages"] if s["id"] == "r1s1-score")["metrics"]
        assert score["from_cache"] >= answered - 1 and srv.stats.repeated_answers() <= 1


def test_max_cost_stops_cleanly_and_a_bigger_budget_continues(store_dir: Path, tmp_path: Path,
                                                              tiny_model: Path) -> None:
    with serve() as srv:
        cfg = _setup(tmp_path, tiny_model, teacher="openai:gpt-4o-mini", base_url=srv.openai_base_url,
                     rounds=1)
        body = cfg.read_text().replace('eval_split = "test"', 'eval_split = ""\nmax_cost = 0.0000001')
        cfg.write_text(body)
        key = {"OPENAI_API_KEY": "sk-x"}
        r = train(["loop", "--config", cfg, "--run-dir", tmp_path / "run"], env=key)
        assert r.exit_code == 1 and "--max-cost" in r.stderr
        st = train(["status", tmp_path / "run", "--json"]).json()
        assert st["current"] == "r1s1-score" and st["status"] == "running"
        cfg.write_text(body.replace("max_cost = 0.0000001", "max_cost = 1.0"))  # a budget may change
        r = train(["loop", "--config", cfg, "--run-dir", tmp_path / "run", "--json"], env=key)
        assert r.exit_code == 0, r.output
        assert srv.stats.repeated_answers() == 0
        assert 0 < json.loads((tmp_path / "run" / "run.json").read_text())["teacher_cost_usd"] < 1.0


def test_unknown_split_fails_before_any_work(store_dir: Path, tmp_path: Path) -> None:
    cfg = _setup(tmp_path, Path("unused-model"))
    cfg.write_text(cfg.read_text().replace('eval_split = "test"', 'eval_split = "dev"'))
    r = train(["loop", "--config", cfg, "--run-dir", tmp_path / "run"])
    assert r.exit_code == 1 and "eval_split 'dev' is not a split of sqa@v1" in r.stderr
    assert not (tmp_path / "run" / "run.json").exists()


def test_help_teaches_with_tables_and_examples() -> None:
    r = train(["loop", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    assert "[loop]" in r.stdout and "[ppo]" in r.stdout  # not eaten as rich markup
    assert "Example: ares-train loop --config" in r.stdout
    assert "Example:" in train(["status", "--help"], env={"COLUMNS": "200"}).stdout


@pytest.mark.parametrize(("teacher", "message", "code"), [
    ("openai:gpt-4o-mini", "OPENAI_API_KEY is not set", 1),
    ("nosuch:model", "unknown teacher provider 'nosuch'", 2),
])
def test_teacher_problems_fail_before_any_work(store_dir: Path, tmp_path: Path, teacher: str, message: str,
                                               code: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = _setup(tmp_path, Path("never-loaded-model"), teacher=teacher)
    r = train(["loop", "--config", cfg, "--run-dir", tmp_path / "run"])
    assert r.exit_code == code and message in r.stderr, r.stderr
    assert not (tmp_path / "run" / "run.json").exists()


def test_run_folder_name_becomes_a_valid_dataset_prefix(store_dir: Path, tmp_path: Path) -> None:
    from ares_train.loop.run import LoopRun

    settings = load_loop_settings(None, {"model": "m", "problems": "sqa"})
    assert LoopRun(tmp_path / "rl,rl,sft run", settings, Store(store_dir)).prefix == "rl-rl-sft-run"
    cfg = _setup(tmp_path, Path("never-loaded-model"))
    cfg.write_text(cfg.read_text().replace("[loop]\n", "[loop]\nname = 'my run'\n"))
    r = train(["loop", "--config", cfg, "--run-dir", tmp_path / "run"])
    assert r.exit_code == 1 and "name 'my run' in [loop]" in r.stderr, r.stderr
    assert not (tmp_path / "run" / "run.json").exists()


def test_status_sees_a_run_in_progress(tmp_path: Path) -> None:
    from ares_train.loop.run import run_is_active, run_lock

    (tmp_path / "run.json").write_text(json.dumps({"status": "running", "stages": []}))
    assert not run_is_active(tmp_path)
    with run_lock(tmp_path):
        assert run_is_active(tmp_path)
        assert train(["status", tmp_path, "--json"]).json()["active"] is True
    assert not run_is_active(tmp_path)


def test_loop_max_tokens_builds_the_same_version_as_the_cli(store_dir: Path, tmp_path: Path) -> None:
    """[loop] max_tokens reaches the teacher stages like `ares-data score --max-tokens`: one build."""
    from ares_data.testing.lineage import problem_rows, rationale_rows
    from ares_train.loop.stages import Context, teacher_stage

    s = Store(store_dir)
    problems = s.publish("sqa", "problems", problem_rows(2))
    s.publish("rats", "rationales", rationale_rows(2, 2), parents=[problems])
    cfg = tmp_path / "ares.toml"
    cfg.write_text('[loop]\nmodel = "m"\nproblems = "sqa"\nteacher = "reference"\nmax_tokens = 300\n')
    settings = load_loop_settings(cfg)
    assert settings.loop.max_tokens == 300
    ctx = Context(s, settings, tmp_path, prefix="rats")
    out, metrics = teacher_stage(ctx, "score", "rats@v1")
    assert not metrics["reused"] and s.resolve(out["scores"]).manifest["params"]["max_tokens"] == 300
    cli = data(["score", "rats", "--teacher", "reference", "--max-tokens", "300", "--json"]).json()
    assert cli["ref"] == out["scores"]  # the CLI found the loop's build
    default = data(["score", "rats", "--teacher", "reference", "--json"]).json()
    assert default["ref"] != out["scores"]  # another budget is another build
    unset = load_loop_settings(None, {"model": "m", "problems": "sqa"})
    assert unset.loop.max_tokens is None
    assert settings.sha() != unset.sha()  # it decides what the teacher stages make: not operational


@pytest.mark.parametrize(("value", "message"), [("0", "max_tokens must be >= 1, got 0"),
                                                ("-5", "max_tokens must be >= 1, got -5"),
                                                ("'lots'", "'max_tokens'")])
def test_loop_max_tokens_is_validated(tmp_path: Path, value: str, message: str) -> None:
    from ares_data.errors import ConfigError

    cfg = tmp_path / "ares.toml"
    cfg.write_text(f'[loop]\nmodel = "m"\nproblems = "sqa"\nmax_tokens = {value}\n')
    with pytest.raises(ConfigError, match=message) as e:
        load_loop_settings(cfg)
    assert "unknown key" not in str(e.value)
