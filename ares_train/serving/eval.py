"""`ares-train eval --engine server`: the same two greedy steps as in-process (`ares_train.eval`), through a
server: the rationale from the prompt (token ids built locally), then, where it states no option, the
answer from prompt + rationale + trigger. Decoding is greedy with the model's generation_config
overridden (no repetition penalty or n-gram blocking), as in-process; the eval manifest records the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..sampling import sampling_params, stop_token_ids
from .client import Prompt
from .rollout import Processing, ServerSampler, _sample_and_close
from .session import Connection, make_sampler


class ServerPredictor:
    """`predict(processing, problems, opts)` for `ares_train.eval.evaluate`, one server round-trip a step."""

    def __init__(self, opts: Any, conn: Connection, processing: Processing, checkpoint: str) -> None:
        self.opts, self.conn, self.processing, self.checkpoint = opts, conn, processing, checkpoint
        self.stops = stop_token_ids(processing)
        self.server: dict[str, Any] = {}

    def _texts(self, prompts: list[Prompt], max_new_tokens: int) -> list[str]:
        from ..rollout import response_text

        params = {**sampling_params(0.0, max_new_tokens, self.stops), "seed": 0}
        sampler: ServerSampler = make_sampler(self.opts, self.conn, self.processing, params, 1,
                                              checkpoint=self.checkpoint)
        out = asyncio.run(_sample_and_close(sampler, prompts))
        self.server = {**sampler.client.describe(), **self.conn.served}
        return [response_text(self.processing.tokenizer, ids[0], set(self.stops)) for ids in out]

    def _encoded(self, texts: list[str]) -> list[Prompt]:
        tok = self.processing.tokenizer
        return [Prompt(tok(t, add_special_tokens=False)["input_ids"], t) for t in texts]

    def __call__(self, processing: Any, problems: list[dict], opts: Any) -> list[dict[str, Any]]:
        from ..eval import with_answers
        from ..prompting import render_prompt

        prompts = [render_prompt(processing, p) for p in problems]
        rationales = [r.strip() for r in self._texts(self._encoded(prompts), opts.max_new_tokens)]
        answer: Callable[[list[str], list[dict]], list[str]] = lambda texts, _: self._texts(  # noqa: E731
            self._encoded(texts), opts.answer_tokens)
        return with_answers(problems, prompts, rationales, opts.answer_tokens, answer)


def evaluate_on_server(checkpoint: str, ds: Any, opts: Any,
                       on_progress: Callable[[int, int], None] | None = None
                       ) -> tuple[list[dict], dict[str, Any], Processing]:
    """Eval rows through the server -> (rows, the server description, the checkpoint's processing)."""
    from ..eval import evaluate
    from ..modeling import weights_fingerprint
    from .rollout import load_processing
    from .session import connect, refuse_images

    processing = load_processing(checkpoint)
    refuse_images(processing)
    batch = max(opts.batch_size, 4 * opts.concurrency)  # a server batches requests itself: keep it busy
    wide = type(opts)(**{**vars(opts), "batch_size": batch})
    with connect(opts, checkpoint) as conn:
        predictor = ServerPredictor(opts, conn, processing, checkpoint)
        rows = evaluate(processing, ds, wide, model_name=checkpoint,
                        fingerprint=weights_fingerprint(checkpoint),
                        on_progress=on_progress, predict=predictor)
    return rows, predictor.server, processing
