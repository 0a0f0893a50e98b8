"""`ares-train rollout` through the CLI on tiny text models and a tiny VLM with the shipped sample."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import data, train

pytest.importorskip("torch")

from ares_data.store import Store  # noqa: E402
from ares_train.modeling import load_policy, weights_fingerprint  # noqa: E402
from ares_train.prompting import render_prompt  # noqa: E402
from ares_train.rollout import response_text  # noqa: E402
from ares_train.sampling import differences  # noqa: E402
from ares_train.tiny import build_tiny_text_model, build_tiny_vlm  # noqa: E402


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from ares_data.sample import SAMPLE_DIR

    root = tmp_path_factory.mktemp("rollout")
    store = root / "store"
    r = data(["--store", store, "ingest", "scienceqa", SAMPLE_DIR, "-o", "sqa"])
    assert r.exit_code == 0, r.output
    return {"store": store, "bpe": build_tiny_text_model(root / "bpe", tokenizer_kind="bpe"),
            "vlm": build_tiny_vlm(root / "vlm")}


def rollout(env: dict[str, Any], model: Path, out: str, *extra: Any) -> dict[str, Any]:
    r = train(["--store", env["store"], "rollout", "--model", model, "--problems", "sqa", "-o", out,
               "--max-new-tokens", 12, "--json", *extra])
    assert r.exit_code == 0, r.output
    return r.json()


def check_rows(store: Path, ref: str, model: Path, *, k: int) -> list[dict[str, Any]]:
    version = Store(store).resolve(ref)
    policy = load_policy(model)
    problems = {p["problem_id"]: p for p in Store(store).resolve("sqa").load()}
    rows = list(version.load())
    fp = weights_fingerprint(model)
    assert version.manifest["parents"][0]["ref"] == "sqa@v1"
    for row in rows:
        assert row["generator"] == str(model) and row["generator_fingerprint"] == fp
        params = json.loads(row["generation_params"])
        assert params["max_new_tokens"] == 12 and differences(params) == []
        assert row["prompt"] == render_prompt(policy, problems[row["problem_id"]])
        ids, stops = row["token_ids"], set(params["stop_token_ids"])
        assert 0 < len(ids) <= 12 and not stops & set(ids[:-1])
        assert len(ids) == 12 or ids[-1] in stops  # a response ends in its stop token or at the limit
        assert row["text"] == response_text(policy.tokenizer, ids, stops)
        for s in row["sentences"]:
            assert row["text"][s["start"]:s["end"]] == s["text"]
    by_problem: dict[str, list[int]] = {}
    for row in rows:
        by_problem.setdefault(row["problem_id"], []).append(row["sample_index"])
    assert all(sorted(v) == list(range(k)) for v in by_problem.values())
    return rows


def test_rollout_text_model_rows_reuse_and_determinism(env: dict[str, Any]) -> None:
    out = rollout(env, env["bpe"], "r", "--k", 2, "--limit", 5, "--seed", 7)
    assert out["rows"] == 10 and out["reused"] is False and out["ref"] == "r@v1"
    rows = check_rows(env["store"], "r@v1", env["bpe"], k=2)
    assert all(r["round"] == 0 for r in rows)
    assert rows[0]["token_ids"] != rows[1]["token_ids"]  # two samples of one problem differ
    again = rollout(env, env["bpe"], "r", "--k", 2, "--limit", 5, "--seed", 7)
    assert again["reused"] is True and again["ref"] == "r@v1"
    # the same seed gives the same samples (published under another name), another seed other samples
    same = rollout(env, env["bpe"], "r-copy", "--k", 2, "--limit", 5, "--seed", 7)
    other = rollout(env, env["bpe"], "r", "--k", 2, "--limit", 5, "--seed", 8, "--round", 1)
    assert other["ref"] == "r@v2"
    load = lambda ref: [r["token_ids"] for r in Store(env["store"]).resolve(ref).load()]  # noqa: E731
    assert load(same["ref"]) == load("r@v1") and load("r@v2") != load("r@v1")
    assert {r["round"] for r in Store(env["store"]).resolve("r@v2").load()} == {1}


def test_rollout_sentencepiece_model(tmp_path: Path, env: dict[str, Any]) -> None:
    model = build_tiny_text_model(tmp_path / "sp", tokenizer_kind="sentencepiece")
    out = rollout(env, model, "sp", "--k", 1, "--limit", 3, "--split", "val", "--batch-size", 2)
    assert out["rows"] == 3
    rows = check_rows(env["store"], out["ref"], model, k=1)
    problems = {p["problem_id"]: p["split"] for p in Store(env["store"]).resolve("sqa").load()}
    assert {problems[r["problem_id"]] for r in rows} == {"val"}


def test_rollout_vlm_feeds_images(env: dict[str, Any]) -> None:
    out = rollout(env, env["vlm"], "v", "--k", 2, "--limit", 4, "--batch-size", 3)
    rows = check_rows(env["store"], out["ref"], env["vlm"], k=2)
    problems = {p["problem_id"]: p for p in Store(env["store"]).resolve("sqa").load()}
    with_image = [r for r in rows if problems[r["problem_id"]]["image"] is not None]
    without = [r for r in rows if problems[r["problem_id"]]["image"] is None]
    assert with_image and without  # the first train problems mix both
    assert all("<image>" in r["prompt"] for r in with_image)
    assert all("<image>" not in r["prompt"] for r in without)


def test_rollout_errors(env: dict[str, Any], tmp_path: Path) -> None:
    r = train(["--store", env["store"], "rollout", "--model", env["bpe"], "--problems", "sqa", "-o", "x",
               "--split", "nope"])
    assert r.exit_code == 1 and "split 'nope'" in r.stderr and "train" in r.stderr
    r = train(["--store", env["store"], "rollout", "--problems", "sqa", "-o", "x"])
    assert r.exit_code == 1 and "needs 'model'" in r.stderr
    r = train(["--store", env["store"], "rollout", "--model", tmp_path / "nothing", "--problems", "sqa",
               "-o", "x"])
    assert r.exit_code == 1 and "model folder" in r.stderr and "not found" in r.stderr
    r = train(["--store", env["store"], "rollout", "--model", env["bpe"], "--problems", "sqa", "-o", "x",
               "--temperature", 0, "--k", 2, "--limit", 1, "--max-new-tokens", 2])
    assert r.exit_code == 0 and "Warning: temperature 0 is greedy" in r.stderr
    assert not (env["store"] / "nope").exists()
