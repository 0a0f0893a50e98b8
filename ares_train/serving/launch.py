"""`--serve-cmd`: start a serving engine on the checkpoint, wait until it answers, stop it afterwards.

    with served_checkpoint("vllm serve {model} --port {port}", "runs/r1/ckpt") as served:
        ...  # served.base_url, served.model_id, served.folder

The engine serves a *pinned view* of the checkpoint: a temporary folder holding links to every file of the
checkpoint except `generation_config.json`, which is rewritten with the neutral value of every sampling
field (`ares_train.sampling.NEUTRAL`, no top-k, top-p 1, no penalties): whatever the request cannot carry,
the served folder does. `{model}` in the command is that folder, `{port}` a free local port. The process
runs in its own session; on leaving the block (normally, on an error or on Ctrl-C / SIGTERM) its whole
process group gets SIGTERM, then SIGKILL after `stop_timeout` seconds, so no engine is left holding the
GPU. The engine's output goes to `serve.log` in the temporary folder; its last lines are in the errors.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ares_data.errors import ConfigError, UsageError

from ..sampling import NEUTRAL
from .client import ServerError

SERVER_FIELDS = ("top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "repetition_penalty",
                 "no_repeat_ngram_size", "min_new_tokens")


class ServerDied(ServerError):
    """The serving engine exited or stopped answering."""


@dataclass
class Served:
    base_url: str
    model_id: str  # the id the engine reports for the checkpoint
    folder: str  # what the engine was started on (the pinned view of the checkpoint)
    command: list[str]
    pid: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned_view(checkpoint: Path, into: Path) -> Path:
    """A folder with links to the checkpoint's files and a generation_config.json pinned to plain sampling."""
    if not (checkpoint / "config.json").is_file():
        raise ConfigError(f"--serve-cmd serves a model folder; {checkpoint} has no config.json",
                          hint="give --model a local model folder (merge a LoRA adapter into its base first)")
    into.mkdir(parents=True)
    for item in checkpoint.iterdir():
        if item.name != "generation_config.json":
            (into / item.name).symlink_to(item.resolve())
    gen_path = checkpoint / "generation_config.json"
    gen = json.loads(gen_path.read_text(encoding="utf-8")) if gen_path.is_file() else {}
    gen.update({k: v for k, v in NEUTRAL.items() if k in SERVER_FIELDS})
    for key in ("min_p", "bad_words_ids", "suppress_tokens", "begin_suppress_tokens", "sequence_bias",
                "forced_bos_token_id", "forced_eos_token_id", "exponential_decay_length_penalty"):
        gen.pop(key, None)
    gen["top_k"], gen["do_sample"] = 0, True
    (into / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n", encoding="utf-8")
    return into


def command_line(template: str, folder: Path, port: int) -> list[str]:
    if "{model}" not in template or "{port}" not in template:
        raise ConfigError(f"--serve-cmd must contain {{model}} and {{port}} (got {template!r})",
                          hint='e.g. --serve-cmd "vllm serve {model} --port {port}"')
    return [part.format(model=str(folder), port=port) for part in shlex.split(template)]


def _tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def wait_ready(proc: subprocess.Popen, base_url: str, log: Path, timeout: float) -> list[str]:
    """Poll GET {base_url}/models until it answers; the model ids it lists. Raises ServerDied."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerDied(f"the serving engine exited with code {proc.returncode} before answering; "
                             f"its last output:\n{_tail(log)}")
        with contextlib.suppress(httpx.HTTPError, ValueError):
            reply = httpx.get(f"{base_url}/models", timeout=5.0)
            if reply.status_code == 200:
                return [str(m.get("id")) for m in reply.json().get("data", [])]
        time.sleep(0.5)
    raise ServerDied(f"the serving engine did not answer {base_url}/models within {timeout:g}s; its last "
                     f"output:\n{_tail(log)}", hint="raise --startup-timeout, or check the command")


def stop(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM to the engine's process group, SIGKILL after `timeout` seconds."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """A SIGTERM to this process unwinds like Ctrl-C, so the engine is stopped (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def served_checkpoint(template: str, checkpoint: str | Path, *, startup_timeout: float = 600.0,
                      stop_timeout: float = 20.0, env: dict[str, str] | None = None) -> Iterator[Served]:
    """Run the engine on a pinned view of `checkpoint` for the duration of the block (see module doc)."""
    tmp = Path(tempfile.mkdtemp(prefix="ares-serve-"))
    port = free_port()
    folder = pinned_view(Path(checkpoint).resolve(), tmp / Path(checkpoint).resolve().name)
    argv = command_line(template, folder, port)
    log = tmp / "serve.log"
    try:
        with _sigterm_as_interrupt(), log.open("wb") as out:
            try:
                proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, env={**os.environ, **(env or {})})
            except OSError as e:
                raise ConfigError(f"--serve-cmd could not start {argv[0]!r}: {e}") from None
            try:
                base_url = f"http://127.0.0.1:{port}/v1"
                ids = wait_ready(proc, base_url, log, startup_timeout)
                model_id = _served_id(ids, folder)
                try:
                    yield Served(base_url, model_id, str(folder), argv, proc.pid)
                except ServerError as e:
                    if proc.poll() is None:
                        raise
                    raise ServerDied(f"{e}; the engine exited with code {proc.returncode}, its last output:\n"
                                     f"{_tail(log)}") from None
                if proc.poll() is not None:
                    raise ServerDied(f"the serving engine exited with code {proc.returncode} during the run; "
                                     f"its last output:\n{_tail(log)}")
            finally:
                stop(proc, stop_timeout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _served_id(ids: list[str], folder: Path) -> str:
    """The id the engine lists for `folder` (vLLM and transformers serve name a model by its path)."""
    for mid in ids:
        if mid == str(folder) or Path(mid).name == folder.name and Path(mid).resolve() == folder.resolve():
            return mid
    raise UsageError(f"the engine started by --serve-cmd serves {ids}, not the checkpoint {folder}",
                     hint="let {model} be the served model (no --served-model-name in the command)")
