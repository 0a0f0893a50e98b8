"""Rollouts sample from exactly the distribution PPO scores, record it, keep the sampled stop token, and
`ppo` refuses rollouts sampled otherwise (issue 9, items 3 and 6)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import data, train

torch = pytest.importorskip("torch")

from ares_data.store import Store  # noqa: E402
from ares_train.modeling import load_policy  # noqa: E402
from ares_train.prompting import build_inputs  # noqa: E402
from ares_train.sampling import differences, plain_generate, sampling_params  # noqa: E402
from ares_train.tiny import build_tiny_text_model  # noqa: E402

DISTORTING = {"top_k": 50, "repetition_penalty": 1.3, "top_p": 0.9, "no_repeat_ngram_size": 2,
              "min_new_tokens": 2,
              "do_sample": True, "temperature": 0.6}


def edit_generation_config(model: Path, **values: Any) -> None:
    path = model / "generation_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}), encoding="utf-8")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from ares_data.sample import SAMPLE_DIR

    root = tmp_path_factory.mktemp("sampling")
    r = data(["--store", root / "store", "ingest", "scienceqa", SAMPLE_DIR, "-o", "sqa"])
    assert r.exit_code == 0, r.output
    model = build_tiny_text_model(root / "distorting", hidden_size=32)
    edit_generation_config(model, **DISTORTING)
    return {"store": root / "store", "model": model, "root": root}


def rollout(env: dict[str, Any], model: Path, out: str, *extra: Any) -> dict[str, Any]:
    r = train(["--store", env["store"], "rollout", "--model", model, "--problems", "sqa", "-o", out, "--json",
               *extra])
    assert r.exit_code == 0, r.output
    return r.json()


def test_generate_uses_no_logits_processor_but_temperature(env: dict[str, Any]) -> None:
    """The scores generate() samples from are the raw logits / T: top_k=50, top_p, the penalty, n-gram
    blocking and min_new_tokens of the model's generation_config are all set aside."""
    policy = load_policy(env["model"])
    problems = list(Store(env["store"]).resolve("sqa").load().select(range(3)))
    inputs = dict(build_inputs(policy, problems))
    plain = dict(return_dict_in_generate=True, output_scores=True, output_logits=True)
    for temperature in (0.7, 0.0):
        out = plain_generate(policy, inputs, temperature=temperature, max_new_tokens=6, **plain)
        assert len(out.scores) >= 2
        for scores, logits in zip(out.scores, out.logits, strict=True):
            assert torch.allclose(scores, logits / (temperature or 1.0))
    assert policy.model.generation_config.top_k == 50  # the model's own config is put back afterwards
    # what generate does by default with this model (the old rollout): the scores are not logits / T
    out = policy.model.generate(**inputs, max_new_tokens=3, **plain)
    assert not all(torch.allclose(s, lg / 0.6) for s, lg in zip(out.scores, out.logits, strict=True))


def test_rollout_first_tokens_follow_softmax_of_logits(env: dict[str, Any]) -> None:
    """Sampled first tokens against softmax(logits / T) of the prompt: under top_k=50 no token outside the
    50 most likely could be drawn, and the repetition penalty would push prompt tokens down."""
    n = 256
    out = rollout(env, env["model"], "first", "--k", n, "--limit", 1, "--max-new-tokens", 1,
                  "--temperature", 1.0, "--batch-size", n, "--seed", 3)
    rows = list(Store(env["store"]).resolve(out["ref"]).load())
    policy = load_policy(env["model"])
    problem = Store(env["store"]).resolve("sqa").load()[0]
    assert rows[0]["problem_id"] == problem["problem_id"]
    ids = build_inputs(policy, [problem])["input_ids"]
    with torch.no_grad():
        probs = torch.softmax(policy.model(input_ids=ids).logits[0, -1].float(), -1)
    first = [r["token_ids"][0] for r in rows]
    outside = set(torch.topk(probs, 50).indices.tolist())
    p_out = float(1 - probs[list(outside)].sum())
    drawn = sum(t not in outside for t in first)
    assert drawn >= n * p_out - 5 * math.sqrt(n * p_out * (1 - p_out)) and drawn > 0
    in_prompt = set(ids[0].tolist())
    p_prompt = float(probs[list(in_prompt)].sum())
    drawn = sum(t in in_prompt for t in first)
    assert abs(drawn - n * p_prompt) <= 5 * math.sqrt(n * p_prompt * (1 - p_prompt)) + 1
    params = json.loads(rows[0]["generation_params"])
    assert differences(params) == []  # what PPO assumes
    assert params == {**sampling_params(1.0, 1, params["stop_token_ids"]), "engine": "transformers",
                      "seed": 3, "batch_size": n, "dtype": "auto"}
    assert params["top_k"] == 0 and params["repetition_penalty"] == 1.0 and params["top_p"] == 1.0


def test_two_eos_model_keeps_the_sampled_stop_token(env: dict[str, Any]) -> None:
    from ares_train.ppo.data import load_rollouts

    model = build_tiny_text_model(env["root"] / "two-eos", hidden_size=32)
    policy = load_policy(model)
    stops = [policy.tokenizer.convert_tokens_to_ids(t) for t in ("<|user|>", "<|system|>")]
    problem = Store(env["store"]).resolve("sqa").load()[0]
    ids = build_inputs(policy, [problem])["input_ids"]
    with torch.no_grad():  # make both stop ids about equally likely as the first response token
        h = policy.model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]
        for s in stops:
            policy.model.lm_head.weight[s] = 12.0 * h / h.dot(h)
    policy.model.generation_config.eos_token_id = stops
    policy.model.save_pretrained(model)
    out = rollout(env, model, "two-eos", "--k", 16, "--limit", 1, "--max-new-tokens", 4, "--seed", 1)
    store = Store(env["store"])
    rat = store.resolve(out["ref"])
    rows = list(rat.load())
    tok_eos = policy.tokenizer.eos_token_id
    ended = [r["token_ids"][-1] for r in rows if r["token_ids"][-1] in stops]
    assert set(ended) == set(stops)  # both stop tokens were sampled, and each is kept where it was
    assert json.loads(rows[0]["generation_params"])["stop_token_ids"] == sorted([*stops, tok_eos])
    scores = [{"rationale_id": r["rationale_id"], "problem_id": r["problem_id"],
               "sentences": [s["text"] for s in r["sentences"]], "scores": [0.5] * len(r["sentences"]),
               "status": "ok", "error": "", "raw_response": "", "teacher": "test", "prompt_sha": "",
               "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "attempts": 1, "cached": False}
              for r in rows]
    sc = store.publish("two-eos-scores", "scores", scores, parents=[rat])
    got = load_rollouts(store, rat, sc, load_policy(model))
    assert got.counts["eos_restored"] == 0 and got.counts["used"] == 16
    assert [r.response_ids.tolist() for r in got.rollouts] == [r["token_ids"] for r in rows]


def test_imported_token_ids_get_their_eos_back(env: dict[str, Any]) -> None:
    """Rows with token ids but no recorded stop ids or limit (an import) are complete: EOS appended."""
    from ares_train.ppo.data import load_rollouts
    from tests.ppo_fixtures import publish_round

    store = Store(env["store"])
    rat, sc = publish_round(store, env["model"], name="imp", fingerprint="")
    policy = load_policy(env["model"])
    eos = policy.tokenizer.eos_token_id
    rows = rat.load().to_list()
    stripped = [{**r, "token_ids": r["token_ids"][:-1], "generation_params": "{}"} for r in rows]
    imported = store.publish("imp-ids", "rationales", stripped, parents=[store.parent_chain(rat, "problems")])
    got = load_rollouts(store, imported, sc, policy, allow_off_policy=True)
    assert got.counts["eos_restored"] == got.counts["used"] == 7
    assert all(r.response_ids.tolist()[-1] == eos for r in got.rollouts)


def test_ppo_refuses_truncated_or_mixed_sampling(env: dict[str, Any], tmp_path: Path) -> None:
    from ares_data.errors import UsageError
    from ares_train.ppo.data import load_rollouts
    from tests.ppo_fixtures import publish_round

    store = Store(env["store"])
    rat, sc = publish_round(store, env["model"], name="topk")
    problems = store.parent_chain(rat, "problems")
    rows = rat.load().to_list()

    def republish(name: str, edit: Any) -> Any:
        changed = [{**r, "generation_params": json.dumps(edit(i, json.loads(r["generation_params"])))}
                   for i, r in enumerate(rows)]
        return store.publish(name, "rationales", changed, parents=[problems])

    topk = republish("topk50", lambda i, p: {**p, "top_k": 50})
    r = train(["--store", env["store"], "ppo", "--model", env["model"], "--rationales", topk.ref, "--scores",
               sc.ref, "--output-dir", tmp_path / "out"])
    assert r.exit_code != 0 and f"{topk.ref}, row 1 (rationale {rows[1]['rationale_id']})" in r.stderr
    assert "top_k=50" in r.stderr and "--allow-off-policy" in r.stderr
    assert not (tmp_path / "out").exists()
    policy = load_policy(env["model"])
    got = load_rollouts(store, topk, sc, policy, allow_off_policy=True)
    assert got.counts["off_distribution"] == got.counts["used"] == 7
    greedy = republish("greedy", lambda i, p: {**p, "temperature": 0.0, "do_sample": False})
    with pytest.raises(UsageError, match="greedy decoding"):
        load_rollouts(store, greedy, sc, policy)
    mixed = republish("mixed", lambda i, p: {**p, "temperature": 0.7 if i % 3 else 1.0})
    with pytest.raises(UsageError, match=r"mixes sampling temperatures \(T=0.7 \(5 rows\), T=1 \(2 rows\)\)"):
        load_rollouts(store, mixed, sc, policy)
    got = load_rollouts(store, mixed, sc, policy, allow_off_policy=True)
    assert got.temperature == 0.7 and got.counts["mixed_temperature"] == 2
    assert load_rollouts(store, rat, sc, policy).counts["off_distribution"] == 0
