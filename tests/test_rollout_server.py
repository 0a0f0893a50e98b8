"""`ares-train rollout --engine server` against a real OpenAI-compatible server: `transformers serve` on a
tiny model built in-process (needs fastapi + uvicorn, in the dev extra), via --base-url and --serve-cmd."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import data, train

pytest.importorskip("torch")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from ares_data.store import Store  # noqa: E402
from ares_train.modeling import load_policy  # noqa: E402
from ares_train.prompting import render_prompt  # noqa: E402
from ares_train.rollout import response_text  # noqa: E402
from ares_train.sampling import differences  # noqa: E402
from ares_train.serving.launch import free_port, stop, wait_ready  # noqa: E402
from ares_train.tiny import build_tiny_text_model  # noqa: E402

SERVE = "transformers serve {model} --port {port} --device cpu"


def start_server(model: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(SERVE.format(model=model, port=port).split(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    wait_ready(proc, url, log, 300)
    return proc, url


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from ares_data.sample import SAMPLE_DIR

    root = tmp_path_factory.mktemp("server")
    r = data(["--store", root / "store", "ingest", "scienceqa", SAMPLE_DIR, "-o", "sqa"])
    assert r.exit_code == 0, r.output
    model = build_tiny_text_model(root / "policy", hidden_size=32)
    gen = model / "generation_config.json"  # defaults an engine would apply: the rollout must override them
    gen.write_text(json.dumps({**json.loads(gen.read_text()), "do_sample": True, "top_k": 50,
                               "repetition_penalty": 1.3, "top_p": 0.9}))
    proc, url = start_server(model, root / "serve.log")
    yield {"root": root, "store": root / "store", "model": model, "url": url, "proc": proc}
    stop(proc)


def rollout(env: dict[str, Any], out: str, *extra: Any) -> Any:
    return train(["--store", env["store"], "rollout", "--model", env["model"], "--problems", "sqa", "-o", out,
                  "--k", 2, "--limit", 3, "--max-new-tokens", 8, "--engine", "server", "--json", *extra])


def check_rows(env: dict[str, Any], ref: str) -> list[dict[str, Any]]:
    """Rows as the in-process path builds them: its prompt, ids that decode to the text, plain sampling."""
    store = Store(env["store"])
    policy = load_policy(env["model"])
    problems = {p["problem_id"]: p for p in store.resolve("sqa").load()}
    rows = list(store.resolve(ref).load())
    assert len(rows) == 6 and sorted(r["sample_index"] for r in rows) == [0, 0, 0, 1, 1, 1]
    for row in rows:
        params = json.loads(row["generation_params"])
        stops = set(params["stop_token_ids"])
        assert differences(params) == [] and params["engine"] == "server"
        assert row["prompt"] == render_prompt(policy, problems[row["problem_id"]])
        ids = row["token_ids"]
        assert row["text"] == response_text(policy.tokenizer, ids, stops)
        body = ids[:-1] if ids[-1] in stops else ids
        assert body == policy.tokenizer(row["text"], add_special_tokens=False)["input_ids"]  # re-tokenized
        server = params["server"]
        assert server["prompt"] == "text" and server["token_ids"] == "retokenized" and server["n"] is False
        assert server["generation_config_field"] is True and "top_k" in server["dropped"]
    return rows


def scores_for(store: Store, rat: Any, name: str) -> Any:
    rows = [{"rationale_id": r["rationale_id"], "problem_id": r["problem_id"],
             "sentences": [s["text"] for s in r["sentences"]],
             "scores": [0.9 if i % 2 else 0.1 for i, _ in enumerate(r["sentences"])], "status": "ok",
             "error": "", "raw_response": "", "teacher": "test", "prompt_sha": "", "input_tokens": 0,
             "output_tokens": 0, "cost_usd": 0.0, "attempts": 1, "cached": False} for r in rat.load()]
    return store.publish(name, "scores", rows, parents=[rat])


def test_eval_through_the_server_matches_in_process(env: dict[str, Any]) -> None:
    """Greedy eval through the server gives the in-process rationales and answers; the server is recorded."""
    args = ["--store", env["store"], "eval", "--model", env["model"], "--problems", "sqa", "--limit", 4,
            "--max-new-tokens", 8, "--answer-tokens", 3, "--json"]
    local = train([*args, "-o", "ev-local"])
    served = train([*args, "-o", "ev-server", "--engine", "server", "--base-url", env["url"]])
    assert local.exit_code == 0 and served.exit_code == 0, served.output
    store = Store(env["store"])
    rows = {ref: list(store.resolve(ref).load()) for ref in ("ev-local", "ev-server")}
    keys = ("problem_id", "rationale", "answer_text", "predicted_index")
    pick = {ref: [{k: r[k] for k in keys} for r in got] for ref, got in rows.items()}
    assert pick["ev-server"] == pick["ev-local"]
    manifest = json.loads((Path(served.json()["path"]) / "manifest.json").read_text())
    assert manifest["server"]["base_url"] == env["url"] and manifest["params"]["engine"] == "server"


def test_base_url_rollout_then_ppo_then_a_dying_server(env: dict[str, Any], tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    r = rollout(env, "srv", "--base-url", env["url"], "--log", log, "--concurrency", 2)
    assert r.exit_code == 0, r.output
    out = r.json()
    assert out["rows"] == 6 and out["counts"]["requests"] == 6  # n ignored by this server: k requests
    assert 6 <= out["counts"]["completion_tokens"] <= 6 * 8  # the server's own count of sampled tokens
    check_rows(env, out["ref"])
    server = json.loads((Path(out["path"]) / "manifest.json").read_text())["server"]
    assert server["base_url"] == env["url"] and server["model"] == str(env["model"])
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert events.count("reply") == 7 and "rejected" in events  # models + 6 completions; adapting

    # ppo trains on the result unchanged
    from ares_train.ppo.run import PPORunConfig, run_ppo

    store = Store(env["store"])
    rat = store.resolve(out["ref"])
    sc = scores_for(store, rat, "srv-scores")
    res = run_ppo(PPORunConfig(model=str(env["model"]), rationales=rat.ref, scores=sc.ref,
                               output_dir=str(tmp_path / "ppo"), ppo_epochs=1, mini_batch_size=2), store)
    assert res.counts["used"] == 6 and (tmp_path / "ppo" / "ares-checkpoint.json").is_file()

    # a field the requests cannot carry (transformers serve has no request field to clear suppress_tokens)
    gen = env["model"] / "generation_config.json"
    original = gen.read_text()
    gen.write_text(json.dumps({**json.loads(original), "suppress_tokens": [5]}))
    try:
        r = rollout(env, "supp", "--base-url", env["url"])
        assert r.exit_code != 0 and "does not take suppress_tokens in a request" in r.stderr
        assert "--serve-cmd" in r.stderr and not (env["store"] / "supp").exists()
        r = rollout(env, "supp", "--base-url", env["url"], "--allow-off-policy")
        assert r.exit_code == 0, r.output
        params = json.loads(Store(env["store"]).resolve(r.json()["ref"]).load()[0]["generation_params"])
        assert differences(params) == ["suppress_tokens=served default"]  # so ppo refuses these rows
    finally:
        gen.write_text(original)

    # the server dies mid-rollout: a clear error, nothing published
    log2 = tmp_path / "dying.jsonl"
    killer = threading.Thread(target=_kill_after_first_reply, args=(env["proc"], log2), daemon=True)
    killer.start()
    r = rollout(env, "dies", "--base-url", env["url"], "--log", log2, "--concurrency", 1, "--max-attempts", 2,
                "--limit", 6)
    killer.join()
    assert r.exit_code == 1 and "stopped answering after 2 attempts" in r.stderr, r.output
    assert not (env["store"] / "dies").exists()


def _kill_after_first_reply(proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count('"event": "reply"') >= 3:  # models, negotiate, one more
            break
        time.sleep(0.05)
    stop(proc, 5)


def test_serve_cmd_starts_verifies_and_stops_the_engine(env: dict[str, Any]) -> None:
    r = rollout(env, "cmd", "--serve-cmd", SERVE, "--startup-timeout", 300)
    assert r.exit_code == 0, r.output
    out = r.json()
    check_rows(env, out["ref"])
    server = json.loads((Path(out["path"]) / "manifest.json").read_text())["server"]
    folder = Path(server["model"])
    assert server["serve_cmd"][:3] == ["transformers", "serve", str(folder)]
    assert server["pinned_generation_config"] is True
    assert folder.name == env["model"].name and not folder.parent.exists()  # the pinned view is cleaned up
    assert not _processes_mentioning(str(folder.parent))  # the engine is gone


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(pid))
    return found


def test_server_options_and_errors(env: dict[str, Any]) -> None:
    r = train(["rollout", "--help"])
    assert r.exit_code == 0 and "--engine" in r.stdout and "--serve-cmd" in r.stdout
    r = rollout(env, "x")
    assert r.exit_code != 0 and "exactly one of --base-url URL and --serve-cmd CMD" in r.stderr
    r = train(["--store", env["store"], "rollout", "--model", env["model"], "--problems", "sqa", "-o", "x",
               "--base-url", "http://127.0.0.1:9/v1"])
    assert r.exit_code != 0 and "add --engine server" in r.stderr
    r = rollout(env, "x", "--serve-cmd", "transformers serve --port {port}")
    assert r.exit_code != 0 and "must contain {model} and {port}" in r.stderr
    r = rollout(env, "x", "--base-url", f"http://127.0.0.1:{free_port()}/v1", "--max-attempts", 1)
    assert r.exit_code == 1 and "stopped answering after 1 attempts" in r.stderr
    r = rollout(env, "x", "--serve-cmd", "python -c 'import sys; sys.exit(3)' {model} {port}")
    assert r.exit_code == 1 and "exited with code 3 before answering" in r.stderr
    assert not (env["store"] / "x").exists()


def test_loop_config_passes_the_engine_to_rollout(tmp_path: Path) -> None:
    from ares_train.loop.config import load_loop_settings
    from ares_train.rollout import RolloutConfig

    cfg = tmp_path / "ares.toml"
    cfg.write_text('[loop]\nmodel = "m"\nproblems = "sqa"\n[rollout]\nengine = "server"\n'
                   'serve_cmd = "vllm serve {model} --port {port}"\nconcurrency = 64\n', encoding="utf-8")
    settings = load_loop_settings(cfg)
    rollout = RolloutConfig(**{**settings.rollout, "model": "m", "problems": "sqa", "output": "r"})
    assert rollout.engine == "server" and rollout.serve_cmd.startswith("vllm serve")
    assert rollout.concurrency == 64
    rollout.validate()


def test_a_vlm_samples_through_the_chat_endpoint_with_its_images(tmp_path: Path) -> None:
    from ares_data.sample import SAMPLE_DIR
    from ares_train.tiny import build_tiny_vlm

    store = tmp_path / "store"
    assert data(["--store", store, "ingest", "scienceqa", SAMPLE_DIR, "-o", "sqa"]).exit_code == 0
    vlm = build_tiny_vlm(tmp_path / "vlm")
    args = ["--store", store, "--model", vlm, "--problems", "sqa", "--engine", "server", "--serve-cmd", SERVE]
    r = train(["rollout", *args, "-o", "v", "--k", 2, "--limit", 4, "--max-new-tokens", 6, "--json"])
    assert r.exit_code == 0, r.output
    policy = load_policy(vlm)
    problems = {p["problem_id"]: p for p in Store(store).resolve("sqa").load()}
    rows = list(Store(store).resolve(r.json()["ref"]).load())
    assert len(rows) == 8 and any(problems[row["problem_id"]]["image"] is not None for row in rows)
    for row in rows:  # the server counted as many prompt tokens (images included) as the processor makes
        assert row["prompt"] == render_prompt(policy, problems[row["problem_id"]])
        params = json.loads(row["generation_params"])
        assert params["server"]["prompt"] == "chat" and differences(params) == []
    r = train(["eval", *args, "-o", "ev", "--limit", 2])
    assert r.exit_code != 0 and "takes text models only" in r.stderr


FAKE_ENGINE = """
import http.server, json, sys
model, port = sys.argv[1], int(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"data": [{"id": model}]}).encode()
        self.send_response(200); self.send_header("content-type", "application/json"); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


@pytest.mark.parametrize("served_as", ["{model}", "another-model"])
def test_serve_cmd_engine_is_stopped_on_ctrl_c_and_on_a_wrong_model(tmp_path: Path, served_as: str) -> None:
    """The engine's process group is gone after Ctrl-C inside the block, and after a refused model id."""
    import sys

    from ares_train.serving.launch import served_checkpoint

    model = tmp_path / "ckpt"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "generation_config.json").write_text(json.dumps({"top_k": 20, "repetition_penalty": 1.2}))
    script = tmp_path / "engine.py"
    script.write_text(FAKE_ENGINE)
    pids: list[int] = []
    with pytest.raises((KeyboardInterrupt, Exception)) as e:
        with served_checkpoint(f"{sys.executable} {script} {served_as} {{port}} {{model}}", model,
                               startup_timeout=60) as served:
            pids.append(served.pid)
            pinned = json.loads((Path(served.folder) / "generation_config.json").read_text())
            assert pinned["top_k"] == 0 and pinned["repetition_penalty"] == 1.0 and pinned["top_p"] == 1.0
            assert (Path(served.folder) / "config.json").resolve() == (model / "config.json").resolve()
            raise KeyboardInterrupt
    if served_as == "{model}":
        assert e.type is KeyboardInterrupt and pids
    else:
        assert "serves ['another-model'], not the checkpoint" in str(e.value) and not pids
    assert not _processes_mentioning(str(script))


def test_what_is_recorded_of_a_server_holds_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    from ares_train.serving.client import KEY_ENV, ServerClient

    monkeypatch.setenv(KEY_ENV, "sk-server-secret-123456")
    client = ServerClient("http://me:pw@host:8000/v1?token=sk-server-secret-123456", "m")
    recorded = json.dumps(client.describe())
    assert "pw@" not in recorded and "sk-server-secret-123456" not in recorded
    assert client.describe()["base_url"].startswith("http://host:8000/v1")


def test_an_engine_that_exits_mid_run_is_named_in_the_error(tmp_path: Path) -> None:
    import signal
    import sys

    from ares_train.serving.client import ServerError
    from ares_train.serving.launch import served_checkpoint

    model = tmp_path / "ckpt"
    model.mkdir()
    (model / "config.json").write_text("{}")
    script = tmp_path / "engine.py"
    script.write_text(FAKE_ENGINE)
    with pytest.raises(ServerError, match=r"stopped answering; the engine exited with code -9"):
        cmd = f"{sys.executable} {script} {{model}} {{port}}"
        with served_checkpoint(cmd, model, startup_timeout=60) as s:
            os.kill(s.pid, signal.SIGKILL)
            time.sleep(0.5)
            raise ServerError("the server stopped answering")
