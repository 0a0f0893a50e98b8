"""`--engine server` end to end: connect (or start the engine with --serve-cmd), sample, publish.

Sampling finishes before anything is written, so a server that refuses, dies or stops answering mid-run
leaves no version behind; an engine started by --serve-cmd is stopped in every case. The manifest records
the server (`server`: base URL, served model id, how requests were made, the --serve-cmd command with
secrets redacted) next to the usual generator and fingerprint. `connect` and `make_sampler` serve rollout
and eval alike (their configs share the server field names).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ares_data.engine.log import RequestLog
from ares_data.errors import ConfigError
from ares_data.redact import redact_argv
from ares_data.store import Store, Version

from ..rollout import Progress, RolloutConfig, publish_rows, select_problems
from ..sampling import stop_token_ids
from .client import ServerClient
from .launch import served_checkpoint
from .rollout import Processing, ServerSampler, load_processing, server_rows


@dataclass
class Connection:
    base_url: str
    model: str  # the served model id ("" = the only one listed)
    pinned: bool  # the engine serves a copy with a pinned generation_config (--serve-cmd)
    log: RequestLog | None
    served: dict[str, Any] = field(default_factory=dict)  # what the manifest records of --serve-cmd


@contextlib.contextmanager
def connect(cfg: Any, checkpoint: str) -> Iterator[Connection]:
    """The server for `cfg` (RolloutConfig or EvalOptions): --base-url, or the engine --serve-cmd starts
    on `checkpoint` for the duration of the block."""
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(RequestLog(cfg.log)) if cfg.log else None
        if not cfg.serve_cmd:
            yield Connection(cfg.base_url, cfg.served_model, False, log)
            return
        engine = stack.enter_context(served_checkpoint(cfg.serve_cmd, checkpoint,
                                                       startup_timeout=cfg.startup_timeout))
        yield Connection(engine.base_url, engine.model_id, True, log,
                         {"serve_cmd": redact_argv(engine.command), "pinned_generation_config": True})


def make_sampler(cfg: Any, conn: Connection, processing: Processing, params: dict[str, Any], k: int, *,
                 checkpoint: str, allow_off_policy: bool = False,
                 progress: Callable[[int, int], None] | None = None) -> ServerSampler:
    client = ServerClient(conn.base_url, conn.model, concurrency=cfg.concurrency, timeout=cfg.request_timeout,
                          max_attempts=cfg.max_attempts, log=conn.log)
    return ServerSampler(client, processing, params, k, checkpoint=checkpoint, served_model=conn.model,
                         pinned=conn.pinned, allow_off_policy=allow_off_policy, progress=progress)


def refuse_images(processing: Processing) -> None:
    """Eval's answer step continues a prompt as text, which a chat endpoint cannot do with images."""
    if processing.is_vlm:
        raise ConfigError(f"eval --engine server takes text models only, and {processing.path} is a "
                          "vision-language model", hint="evaluate it in-process (--engine transformers); "
                          "rollout --engine server takes VLMs (images through the chat endpoint)")


def publish_server_rollout(store: Store, cfg: RolloutConfig, problems: Version, fingerprint: str,
                           params: dict[str, Any], *, progress: Progress | None = None,
                           command: list[str] | None = None) -> Version:
    processing = load_processing(cfg.model)
    rows = select_problems(problems, cfg.split, cfg.limit, with_images=processing.is_vlm)
    with connect(cfg, cfg.model) as conn:
        params_now = cfg.generation_params(stop_token_ids(processing))
        sampler = make_sampler(cfg, conn, processing, params_now, cfg.k, checkpoint=cfg.model,
                               allow_off_policy=cfg.allow_off_policy, progress=progress)
        out = server_rows(sampler, rows, model=cfg.model, fingerprint=fingerprint, round=cfg.round,
                          drop_repeats=cfg.drop_repeats, served=conn.served)
    server = {**sampler.client.describe(), **conn.served, "attempts": sampler.client.attempts}
    return publish_rows(store, cfg, problems, params, out, len(rows), fingerprint, extra={"server": server},
                        counts=dict(sampler.counts), command=command)
