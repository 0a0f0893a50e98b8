"""The ARES loop: rounds of (rollout -> score -> ppo) and (rollout -> correct -> sft), resumable.

A run lives in a folder (RUN_DIR) holding `run.json` (the run manifest) and `checkpoints/`; its datasets go
to the store as versions of `<prefix>-rationales`, `<prefix>-scores`, `<prefix>-corrections` and
`<prefix>-eval`. The plan is fixed by the config (`plan_stages`): for each round, the schedule's steps,
then an evaluation; stage ids look like `r1s1-rollout`, `r1s1-score`, `r1s1-ppo`, `r1s2-correct`,
`r1-eval` (`r0-eval` evaluates the starting policy).

`run.json` is rewritten atomically (temp file + rename) after every stage: each stage's status, inputs,
outputs (dataset refs, checkpoint folders), metrics and timings. Running the same command again skips the
stages marked done and continues with the first unfinished one: a stage killed half-way is simply run
again, and that costs no teacher money (answered requests are in the store's request cache, published
datasets are reused by build key, finished checkpoints are recognised by their manifest, PPO and SFT
resume from their own checkpoints). A run folder refuses a config that would change what its stages make
(only `rounds` may grow), and a lock keeps two processes from driving the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ares_data.errors import AresError, ConfigError, UsageError
from ares_data.store import Store, check_name

from . import stages
from .config import LoopConfig, LoopSettings

RUN_FILE = "run.json"
FORMAT = 1


@dataclass
class Stage:
    id: str
    kind: str  # rollout | score | ppo | grpo | correct | sft | eval
    round: int
    step: int  # position in the round's schedule (1-based); 0 for eval
    phase: str  # rl | grpo | sft | eval
    status: str = "pending"  # pending | running | done
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    started_at: str | None = None
    finished_at: str | None = None
    seconds: float | None = None


class Reporter(Protocol):
    def stage_started(self, stage: Stage, index: int, total: int) -> None: ...
    def progress(self, done: int, total: int | None) -> None: ...
    def stage_finished(self, stage: Stage, skipped: bool) -> None: ...


def plan_stages(settings: LoopSettings) -> list[Stage]:
    loop = settings.loop
    out: list[Stage] = []
    if loop.eval_split and loop.eval_initial:
        out.append(Stage("r0-eval", "eval", 0, 0, "eval"))
    kinds = {"rl": ("rollout", "score", "ppo"), "grpo": ("rollout", "score", "grpo"),
             "sft": ("rollout", "correct", "sft")}
    for r in range(1, loop.rounds + 1):
        for j, phase in enumerate(loop.steps(), 1):
            out += [Stage(f"r{r}s{j}-{kind}", kind, r, j, phase) for kind in kinds[phase]]
        if loop.eval_split:
            out.append(Stage(f"r{r}-eval", "eval", r, 0, "eval"))
    return out


def dataset_prefix(run_dir: Path) -> str:
    """The run folder's name made a valid dataset name ("rl,rl,sft run" -> "rl-rl-sft-run")."""
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "-", run_dir.resolve().name).strip("-.")
    return name[:80] or "run"


def check_teacher(loop: LoopConfig) -> None:
    """Fail before any work when the teacher cannot be built (unknown provider, missing API key)."""
    from ares_data.teachers import make_teacher

    teacher = make_teacher(loop.teacher, base_url=loop.teacher_base_url or None, timeout=loop.timeout)
    asyncio.run(teacher.aclose())


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def read_run(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise AresError(f"{run_dir} is not a loop run folder (no {RUN_FILE})",
                        hint="start one with: ares-train loop --config ares.toml --run-dir DIR")
    return json.loads(path.read_text(encoding="utf-8"))


def write_run(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Atomic: a reader (or a crash) sees the old file or the new one, never half of one."""
    path = run_dir / RUN_FILE
    tmp = run_dir / f".{RUN_FILE}.{os.getpid()}.tmp"
    manifest["updated_at"] = _now()
    tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    with open(run_dir / ".lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AresError(f"another process is running the loop in {run_dir}",
                            hint="wait for it, or check with: ares-train status " + str(run_dir)) from None
        yield


def run_is_active(run_dir: str | Path) -> bool:
    """Whether a process holds the run's lock now (a killed run holds none: its status is stale)."""
    path = Path(run_dir) / ".lock"
    if not path.is_file():
        return False
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
        return False


class LoopRun:
    """Drives one run folder; see the module docstring."""

    def __init__(self, run_dir: str | Path, settings: LoopSettings, store: Store) -> None:
        self.run_dir = Path(run_dir)
        self.settings, self.store = settings, store
        self.prefix = settings.loop.name or dataset_prefix(self.run_dir)
        try:  # before any work
            check_name(f"{self.prefix}-corrections")
        except UsageError as e:
            raise ConfigError(f"name '{self.prefix}' in [loop] cannot prefix dataset names",
                              hint=e.hint) from None
        self.stages = plan_stages(settings)
        self.spent_usd = 0.0  # teacher money spent by this invocation (fresh replies only)

    def _manifest(self) -> dict[str, Any]:
        path = self.run_dir / RUN_FILE
        fresh = {"format": FORMAT, "run_dir": str(self.run_dir.resolve()), "prefix": self.prefix,
                 "store": str(self.store.root.resolve()), "config": self.settings.to_dict(),
                 "config_sha": self.settings.sha(), "created_at": _now(), "status": "running",
                 "problems": self.store.resolve_kind(self.settings.loop.problems, "problems").ref,
                 "reference_model": self.settings.loop.model,  # the KL anchor of every RL stage
                 "stages": [asdict(s) for s in self.stages]}
        if not path.is_file():
            self.settings.loop.problems = fresh["problems"]  # pinned: a later ingest cannot change a run
            self._check_splits()
            return fresh
        old = json.loads(path.read_text(encoding="utf-8"))
        self.settings.loop.problems = old.get("problems") or fresh["problems"]
        if old.get("config_sha") != fresh["config_sha"]:
            raise ConfigError(f"{self.run_dir} was started with different settings; a run may only continue "
                              "with more rounds or other teacher limits, budget or base URL",
                              hint="use a new run folder for new settings (ares-train loop --run-dir; "
                              "ares demo --out)")
        done = {s["id"]: s for s in old.get("stages", [])}
        for i, s in enumerate(self.stages):  # keep what was recorded, extend with new rounds
            if s.id in done:
                self.stages[i] = Stage(**done[s.id])
        old.update(config=fresh["config"], stages=[asdict(s) for s in self.stages], status="running")
        return old

    def _check_splits(self) -> None:
        """Fail before any work when the train or eval split is not in the problems dataset."""
        loop = self.settings.loop
        have = set(self.store.resolve(loop.problems).load().data.column("split").to_pylist())
        wanted = {"split": [loop.split], "eval_split": loop.eval_split.split(",") if loop.eval_split else []}
        for key, splits in wanted.items():
            missing = [s for s in splits if s.strip() not in have and s.strip() != "all"]
            if missing:
                raise ConfigError(f"{key} '{','.join(missing)}' is not a split of {loop.problems} "
                                  f"(splits: {', '.join(sorted(have))})")

    def _check_teacher(self) -> None:
        if any(s.status != "done" for s in self.stages if s.kind in ("score", "correct")):
            check_teacher(self.settings.loop)

    def run(self, reporter: Reporter | None = None) -> dict[str, Any]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with run_lock(self.run_dir):
            manifest = self._manifest()
            self._check_teacher()
            write_run(self.run_dir, manifest)
            state = {"model": self.settings.loop.model}
            for i, stage in enumerate(self.stages):
                if stage.status == "done":
                    state.update(stage.outputs)
                    if reporter:
                        reporter.stage_finished(stage, skipped=True)
                    continue
                self._run_stage(stage, state, i, manifest, reporter)
                state.update(stage.outputs)
            cost = sum((s.metrics.get("cost_usd") or 0.0) for s in self.stages)
            manifest.update(status="done", final_model=state["model"], teacher_cost_usd=round(cost, 6))
            write_run(self.run_dir, manifest)
        return manifest

    def _run_stage(self, stage: Stage, state: dict[str, Any], index: int, manifest: dict[str, Any],
                   reporter: Reporter | None) -> None:
        if reporter:
            reporter.stage_started(stage, index, len(self.stages))
        stage.status, stage.started_at = "running", _now()
        stage.inputs = self._inputs(stage, state)
        self._save(manifest)
        t0 = time.monotonic()
        budget = self.settings.loop.max_cost
        ctx = stages.Context(self.store, self.settings, self.run_dir, self.prefix,
                             reporter.progress if reporter else None,
                             None if budget is None else max(0.0, budget - self.spent_usd))
        stage.outputs, stage.metrics = self._call(ctx, stage)
        self.spent_usd += stage.metrics.get("spent_usd") or 0.0
        stage.status, stage.finished_at = "done", _now()
        stage.seconds = round(time.monotonic() - t0, 2)
        self._save(manifest)
        if reporter:
            reporter.stage_finished(stage, skipped=False)

    def _save(self, manifest: dict[str, Any]) -> None:
        manifest["stages"] = [asdict(s) for s in self.stages]
        write_run(self.run_dir, manifest)

    def _inputs(self, stage: Stage, state: dict[str, Any]) -> dict[str, Any]:
        if stage.kind in ("rollout", "eval"):
            return {"model": state["model"], "problems": self.settings.loop.problems}
        if stage.kind in ("score", "correct"):
            return {"rationales": state["rationales"], "teacher": self.settings.loop.teacher}
        if stage.kind == "ppo":  # the KL reference is the run's starting model in every round (the paper's)
            return {"model": state["model"], "rationales": state["rationales"], "scores": state["scores"],
                    "ref_model": self.settings.loop.model, "value_model": state.get("value_model")}
        if stage.kind == "grpo":  # no critic to carry; the same KL reference as ppo
            return {"model": state["model"], "rationales": state["rationales"], "scores": state["scores"],
                    "ref_model": self.settings.loop.model}
        return {"model": state["model"], "corrections": state["corrections"]}

    def _call(self, ctx: stages.Context, stage: Stage) -> tuple[dict, dict]:
        inp = stage.inputs
        ckpt = self.run_dir.resolve() / "checkpoints" / f"r{stage.round}s{stage.step}-{stage.kind}"
        if stage.kind == "rollout":
            k = self.settings.loop.correct_k if stage.phase == "sft" else 0
            return stages.rollout(ctx, inp["model"], stage.round, stage.step, k or None)
        if stage.kind in ("score", "correct"):
            return stages.teacher_stage(ctx, stage.kind, inp["rationales"])
        if stage.kind == "ppo":
            return stages.ppo(ctx, inp["model"], inp["rationales"], inp["scores"], ckpt,
                              ref_model=inp.get("ref_model"), value_model=inp.get("value_model"))
        if stage.kind == "grpo":
            return stages.grpo(ctx, inp["model"], inp["rationales"], inp["scores"], ckpt,
                               ref_model=inp.get("ref_model"))
        if stage.kind == "sft":
            return stages.sft(ctx, inp["model"], inp["corrections"], ckpt)
        return stages.evaluate(ctx, inp["model"])


def round_table(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Per round: teacher reward (mean sentence score of the round's RL rollouts; None without an RL step),
    accuracy after the round, sentences the teacher edited, seconds spent."""
    rounds: dict[int, dict[str, Any]] = {}
    rewards: dict[int, list[float]] = {}
    for s in manifest.get("stages", []):
        r = s["round"]
        row = rounds.setdefault(r, {"round": r, "reward": None, "accuracy": None, "edited": None,
                                    "seconds": 0.0})
        row["seconds"] = round(row["seconds"] + (s.get("seconds") or 0.0), 1)
        m = s.get("metrics") or {}
        if s["status"] != "done":
            continue
        if s["kind"] == "score" and m.get("mean_score") is not None:
            rewards.setdefault(r, []).append(m["mean_score"])
            row["reward"] = round(sum(rewards[r]) / len(rewards[r]), 4)
        elif s["kind"] == "eval":
            row["accuracy"] = m.get("accuracy")
        elif s["kind"] == "correct":
            row["edited"] = (row["edited"] or 0) + (m.get("edited") or 0)
    return [rounds[r] for r in sorted(rounds)]
