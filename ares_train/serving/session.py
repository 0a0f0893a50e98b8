"""`ares-train rollout --engine server`: connect (or start the engine with --serve-cmd), sample, publish.

Sampling finishes before anything is written, so a server that refuses, dies or stops answering mid-run
leaves no version behind; an engine started by --serve-cmd is stopped in every case. The manifest records
the server (`server`: base URL, served model id, how requests were made, the --serve-cmd command with
secrets redacted) next to the usual generator and fingerprint.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ares_data.engine.log import RequestLog
from ares_data.redact import redact_argv
from ares_data.store import Store, Version

from ..rollout import Progress, RolloutConfig, publish_rows, select_problems
from ..sampling import stop_token_ids
from .client import ServerClient
from .launch import served_checkpoint
from .rollout import ServerSampler, load_processing, server_rows


def publish_server_rollout(store: Store, cfg: RolloutConfig, problems: Version, fingerprint: str,
                           params: dict[str, Any], *, progress: Progress | None = None,
                           command: list[str] | None = None) -> Version:
    processing = load_processing(cfg.model)
    rows = select_problems(problems, cfg.split, cfg.limit, with_images=processing.is_vlm)
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(RequestLog(cfg.log)) if cfg.log else None
        served: dict[str, Any] = {}
        base_url, model = cfg.base_url, cfg.served_model
        if cfg.serve_cmd:
            engine = stack.enter_context(served_checkpoint(cfg.serve_cmd, cfg.model,
                                                           startup_timeout=cfg.startup_timeout))
            base_url, model = engine.base_url, engine.model_id
            served = {"serve_cmd": redact_argv(engine.command), "pinned_generation_config": True}
        client = ServerClient(base_url, model, concurrency=cfg.concurrency, timeout=cfg.request_timeout,
                              max_attempts=cfg.max_attempts, log=log)
        sampler = ServerSampler(client, processing, cfg.generation_params(stop_token_ids(processing)), cfg.k,
                                checkpoint=cfg.model, served_model=model, pinned=bool(cfg.serve_cmd),
                                allow_off_policy=cfg.allow_off_policy, progress=progress)
        out = server_rows(sampler, rows, model=cfg.model, fingerprint=fingerprint, round=cfg.round,
                          drop_repeats=cfg.drop_repeats, served=served)
    server = {**client.describe(), **served, "attempts": client.attempts}
    return publish_rows(store, cfg, problems, params, out, len(rows), fingerprint, extra={"server": server},
                        counts=dict(sampler.counts), command=command)
