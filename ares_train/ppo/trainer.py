"""The ARES PPO trainer: TRL's `PPOTrainer` set-up with a train loop over dataset rollouts.

Rollouts come from a rationales dataset instead of being generated (`ares_train.ppo.data` turns them into
padded tensors, images included for VLMs); the reward is placed on the token ending each scored sentence
(`ares_train.ppo.rewards`); the arithmetic is `ares_train.ppo.algorithm`, every TRL PPO import is in
`ares_train.ppo.trl_base`.

The rollouts of one RL round all come from the initial policy (the behaviour policy), so before any update
the old log-probs (of the policy that sampled them) and the reference log-probs of EVERY rollout are computed
once (`_behaviour`); a buffer is then a chunk of the rollouts (by default all of them): the values of its
rollouts come from the value model as it is when the buffer starts, rewards and GAE follow, and
`num_ppo_epochs` passes of shuffled mini-batches update the policy and the value model. A later buffer's
importance ratio is therefore taken against the policy that sampled it, not against the already-updated one.

Losses are per-token means over the whole mini-batch (micro-batches add up to it whatever their size);
policy and value gradients are clipped separately (a large value loss never shrinks the policy's step).
Forward passes run under autocast to the policy's compute dtype (float32 master weights, see
`ares_train.modeling`). Under several processes each gets an equal share of the shuffled rollouts
(`left_out` counts the remainder).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ares_data.errors import InputError

from .algorithm import LossOut, gae, kl_per_token, mean_loss, ppo_loss, response_logprobs, token_rewards
from .batching import MicroBatcher
from .trl_base import PPOConfig, PPOTrainer
from .value import DatasetRewards, ValueModel

__all__ = ["Buffer", "SentencePPOTrainer", "share_rollouts"]

_MEMORY_HINTS = ("pass --gradient-checkpointing", "train a LoRA adapter (--lora-r)", "use shorter rollouts")


def share_rollouts(rollouts: list[Any], world: int, rank: int, seed: int) -> tuple[list[Any], int]:
    """This process's equal share of the shuffled rollouts (the same order on every rank and on resume)
    and how many are left out because they do not divide evenly (the caller counts them)."""
    per_rank = len(rollouts) // world
    if per_rank == 0:
        raise InputError(f"{len(rollouts)} rollouts cannot be shared by {world} processes",
                         hint="launch fewer processes or roll out more rationales")
    order = torch.randperm(len(rollouts), generator=torch.Generator().manual_seed(seed))
    shuffled = [rollouts[i] for i in order.tolist()]
    return shuffled[rank * per_rank : (rank + 1) * per_rank], len(rollouts) - per_rank * world


@dataclass
class Buffer:
    """Per-process rollouts of one buffer plus the per-token tensors computed once for it."""

    rows: list[Any]  # ares_train.ppo.data.Rollout
    mask: torch.Tensor  # [N, R] real response tokens
    sentence_rewards: torch.Tensor
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    rewards: torch.Tensor | None = None
    kl: torch.Tensor | None = None

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            k: getattr(self, k)
            for k in (
                "mask",
                "sentence_rewards",
                "logprobs",
                "ref_logprobs",
                "values",
                "advantages",
                "returns",
                "rewards",
                "kl",
            )
        }


def pad_right(rows: list[torch.Tensor], length: int, value: float = 0.0) -> torch.Tensor:
    out = torch.full((len(rows), length), value, dtype=rows[0].dtype, device=rows[0].device)
    for i, r in enumerate(rows):
        out[i, : r.shape[-1]] = r
    return out


class SentencePPOTrainer(PPOTrainer):
    """TRL's PPOTrainer set-up, with a train loop over dataset rollouts and sentence-level rewards.

    `collate(rows, device) -> (model_inputs, responses, response_mask, sentence_rewards, prompt_len)` turns
    rollouts into padded tensors (prompts left-padded, responses right-padded); see `ares_train.ppo.data`.
    """

    def __init__(
        self,
        args: PPOConfig,
        *,
        model: nn.Module,
        processing_class: Any,
        ref_model: nn.Module | None,
        value_model: ValueModel,
        rollouts: list[Any],
        collate: Callable[..., Any],
        temperature: float = 1.0,
        buffer_size: int = 0,
        forward_batch_size: int = 8,
        mini_batch_size: int = 8,
        log_path: Path | None = None,
        on_step: Callable[[int, int], None] | None = None,
        compute_dtype: Any = None,
        micro_batch_size: int = 0,
    ) -> None:
        from accelerate import PartialState
        from datasets import Dataset

        state = PartialState()
        world = state.num_processes
        self.rollouts, self.left_out = share_rollouts(rollouts, world, state.process_index, args.seed)
        per_rank = len(self.rollouts)
        self.buffer_size = min(buffer_size or per_rank, per_rank)
        self.mini_batch_size = min(mini_batch_size, self.buffer_size)
        self.forward_batch_size, self.temperature = forward_batch_size, temperature
        self.collate, self.log_path, self.on_step = collate, log_path, on_step
        self.compute_dtype = compute_dtype
        # micro-batches: the largest that fits (halved on out-of-memory) unless micro_batch_size fixes it
        self.train_batches = MicroBatcher(self.mini_batch_size, fixed=micro_batch_size or None,
                                          what="the PPO update", hints=_MEMORY_HINTS)
        self.score_batches = MicroBatcher(forward_batch_size, what="the no-grad scoring passes",
                                          setting="forward_batch_size", hints=_MEMORY_HINTS[1:])
        self.behaviour: dict[str, list[torch.Tensor]] | None = None  # per rollout: old + reference log-probs
        self.total_steps = self._planned_steps(args.num_ppo_epochs)
        args.gradient_accumulation_steps, args.num_mini_batches = 1, 1  # we accumulate by hand below
        args.total_episodes = self.total_steps * args.per_device_train_batch_size * world
        self.eos_token_id = model.generation_config.eos_token_id  # TRL resets it when no stop token is set
        super().__init__(
            args=args,
            processing_class=processing_class,
            model=model,
            ref_model=ref_model,
            reward_model=DatasetRewards(),
            value_model=value_model,
            train_dataset=Dataset.from_dict({"index": list(range(per_rank))}),
        )
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        for cb in (PrinterCallback, ProgressCallback):  # library code never prints; the CLI renders
            self.remove_callback(cb)
        self.accelerator.register_for_checkpointing(self.lr_scheduler)
        self._kl_now: list[torch.Tensor] = []
        self.run_key = ""  # identifies the run's settings in checkpoints (set by ares_train.ppo.run)

    def _buffers(self) -> list[list[Any]]:
        n = len(self.rollouts)
        return [self.rollouts[i : i + self.buffer_size] for i in range(0, n, self.buffer_size)]

    def _planned_steps(self, epochs: int) -> int:
        return sum(epochs * math.ceil(len(b) / self.mini_batch_size) for b in self._buffers())

    # -- forward passes --
    def _autocast(self) -> Any:
        from ..modeling import autocast

        return autocast(self.compute_dtype, self.accelerator.device)

    def _forward(
        self,
        module: nn.Module,
        inputs: dict[str, torch.Tensor],
        prompt_len: int,
        resp_len: int,
        with_values: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        sl = slice(prompt_len - 1, prompt_len - 1 + resp_len)
        keep = {"logits_to_keep": resp_len + 1}  # logits of the response positions only, not the prompt's
        with self._autocast():
            if with_values:
                out, values = module(**inputs, output_hidden_states=True, use_cache=False, **keep)
                return out.logits[:, :resp_len], values[:, sl].squeeze(-1).float()
            return module(**inputs, use_cache=False, **keep).logits[:, :resp_len], None

    def _values(self, inputs: dict[str, torch.Tensor], prompt_len: int, resp_len: int) -> torch.Tensor:
        value_model = self.accelerator.unwrap_model(self.model).value_model
        with self._autocast():
            values = value_model(**inputs, use_cache=False)
        return values[:, prompt_len - 1 : prompt_len - 1 + resp_len].float()

    @contextlib.contextmanager
    def _eval_mode(self) -> Any:
        """No-grad passes run without dropout; training mode comes back afterwards."""
        was = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was)

    def _no_grad_rows(
        self, rows: list[Any], passes: Callable[..., dict[str, torch.Tensor]]
    ) -> dict[str, list[torch.Tensor]]:
        """`passes(inputs, responses, prompt_len) -> {name: [B, R] tensor}` over `rows` in length-grouped
        batches under inference mode (as large as fit, see `score_batches`) -> {name: one 1-D tensor per
        row, in `rows` order}. Response lengths come from the rows (host side): no device sync."""
        device = self.accelerator.device
        out: dict[str, list[Any]] = {}

        def run(batches: list[list[int]]) -> None:
            for batch in batches:
                inputs, responses, _, _, plen = self.collate([rows[i] for i in batch], device)
                with torch.inference_mode():
                    results = passes(inputs, responses, plen)
                for name, t in results.items():  # clones outside inference mode: ordinary tensors
                    per_row = out.setdefault(name, [None] * len(rows))
                    for j, i in enumerate(batch):
                        per_row[i] = t[j, : rows[i].response_ids.shape[0]].clone()

        lengths = [r.prompt_ids.shape[0] + r.response_ids.shape[0] for r in rows]
        with self._eval_mode():
            self.score_batches.run(list(range(len(rows))), lengths, run)
        return out

    @torch.no_grad()
    def _behaviour(self) -> dict[str, list[torch.Tensor]]:
        """Old log-probs (the policy as it sampled the rollouts, i.e. before any update) and reference
        log-probs of every rollout of this process, one 1-D tensor per rollout."""
        unwrapped = self.accelerator.unwrap_model(self.model)

        def passes(inputs: dict[str, torch.Tensor], responses: torch.Tensor, plen: int) -> dict[str, Any]:
            r = responses.shape[1]
            logits, _ = self._forward(unwrapped.policy, inputs, plen, r, False)
            lp = response_logprobs(logits, responses, self.temperature)
            del logits  # one vocabulary-wide logits tensor alive at a time
            if getattr(getattr(self, "reference", None), "initial_policy", False):
                return {"logprobs": lp, "ref_logprobs": lp}  # same weights, same log-probs: one pass
            if self.ref_model is None:
                with self.null_ref_context():
                    ref_logits, _ = self._forward(unwrapped.policy, inputs, plen, r, False)
            else:
                ref_logits, _ = self._forward(self.ref_model, inputs, plen, r, False)
            ref = response_logprobs(ref_logits, responses, self.temperature)
            return {"logprobs": lp, "ref_logprobs": ref}

        return self._no_grad_rows(self.rollouts, passes)

    @torch.no_grad()
    def _score_buffer(self, first: int, rows: list[Any]) -> Buffer:
        """Values (the value model now), the behaviour log-probs of rows first.., then rewards and GAE."""
        assert self.behaviour is not None
        device, args = self.accelerator.device, self.args
        values = self._no_grad_rows(rows, lambda inputs, responses, plen: {
            "v": self._values(inputs, plen, responses.shape[1])})["v"]  # fmt: skip
        length = max(r.response_ids.shape[0] for r in rows)
        lengths = torch.tensor([r.response_ids.shape[0] for r in rows])
        picked = {k: v[first : first + len(rows)] for k, v in self.behaviour.items()}
        buf = Buffer(
            rows,
            (torch.arange(length)[None, :] < lengths[:, None]).to(device),
            pad_right([r.rewards for r in rows], length).to(device),
            pad_right(picked["logprobs"], length),
            pad_right(picked["ref_logprobs"], length),
            pad_right(values, length),
        )
        buf.kl = torch.where(buf.mask, kl_per_token(buf.logprobs, buf.ref_logprobs, args.kl_estimator), 0.0)
        buf.rewards = token_rewards(buf.sentence_rewards, buf.kl, buf.mask, args.kl_coef)
        buf.advantages, buf.returns = gae(buf.rewards, buf.values, buf.mask, args.gamma, args.lam)
        return buf

    # -- the update --
    def _mini_batch(self, buf: Buffer, idx: torch.Tensor) -> Any:
        """One optimizer step over the rollouts `idx` of `buf`: gradients accumulated over length-grouped
        micro-batches (as large as fit, see `train_batches`); the losses are token-weighted, so the result
        does not depend on the micro-batch size."""
        rows = idx.tolist()  # a CPU tensor (the shuffled order): no device sync
        n_tokens = max(sum(buf.rows[i].response_ids.shape[0] for i in rows), 1)  # losses add up to the mean
        lengths = [buf.rows[i].prompt_ids.shape[0] + buf.rows[i].response_ids.shape[0] for i in rows]

        def accumulate(chunks: list[list[int]]) -> tuple[list[Any], list[torch.Tensor]]:
            return self._accumulate(buf, chunks, n_tokens)

        outs, kls = self.train_batches.run(rows, lengths, accumulate, reset=self.optimizer.zero_grad)
        self._clip_gradients()
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad()
        self._kl_now.append(torch.cat(kls).mean())
        return mean_loss(outs)

    def _accumulate(
        self, buf: Buffer, chunks: list[list[int]], n_tokens: int
    ) -> tuple[list[Any], list[torch.Tensor]]:
        """Forward + backward over each micro-batch (gradients add up) -> the losses and per-row KLs."""
        acc, device = self.accelerator, self.accelerator.device
        outs, kls = [], []
        for j, chunk in enumerate(chunks):
            inputs, responses, mask, _, plen = self.collate([buf.rows[i] for i in chunk], device)
            ctx = acc.no_sync(self.model) if j < len(chunks) - 1 else contextlib.nullcontext()
            with ctx:
                index = torch.tensor(chunk, device=device)
                pick = {k: v[index, : responses.shape[1]] for k, v in buf.tensors().items()}
                out, new_lp = self._loss(inputs, responses, mask, plen, pick, n_tokens)
                acc.backward(out.loss)
                kl_now = kl_per_token(new_lp.detach(), pick["ref_logprobs"], "k3")  # >= 0 per token
            kls.append((kl_now * mask).sum(1))
            outs.append(out)
        return outs, kls

    def _loss(
        self,
        inputs: dict[str, torch.Tensor],
        responses: torch.Tensor,
        mask: torch.Tensor,
        prompt_len: int,
        pick: dict[str, torch.Tensor],
        n_tokens: torch.Tensor,
    ) -> tuple[LossOut, torch.Tensor]:
        """One micro-batch's loss (`pick`: its rows of the buffer's tensors) and its new log-probs."""
        args = self.args
        logits, vpred = self._forward(self.model, inputs, prompt_len, responses.shape[1], True)
        new_lp = response_logprobs(logits, responses, self.temperature)
        out = ppo_loss(
            new_lp,
            pick["logprobs"],
            pick["advantages"],
            vpred,
            pick["values"],
            pick["returns"],
            mask,
            cliprange=args.cliprange,
            cliprange_value=args.cliprange_value,
            vf_coef=args.vf_coef,
            n_tokens=n_tokens,
        )
        return out, new_lp

    def _clip_gradients(self) -> None:
        """Clip the policy's and the value model's gradients each to max_grad_norm (one joint norm under
        FSDP/DeepSpeed, whose sharded gradients are clipped by the engine as a whole)."""
        acc, limit = self.accelerator, self.args.max_grad_norm
        if not limit or limit <= 0:
            return
        from accelerate.utils import DistributedType

        if acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            acc.clip_grad_norm_(self.model.parameters(), limit)
            return
        unwrapped = acc.unwrap_model(self.model)
        for module in (unwrapped.policy, unwrapped.value_model):
            acc.clip_grad_norm_([p for p in module.parameters() if p.grad is not None], limit)

    def _avg(self, outs: list[Any], field: str) -> float:
        """A loss statistic averaged over the mini-batches and processes."""
        value = torch.stack([getattr(o, field).detach().float() for o in outs]).mean()
        return self.accelerator.gather_for_metrics(value.reshape(1)).mean().item()

    def _per_seq(self, t: torch.Tensor) -> float:
        """A per-token quantity summed per rationale, averaged over rationales and processes."""
        return self.accelerator.gather_for_metrics(t.sum(1).mean().reshape(1)).mean().item()

    def _loss_metrics(self, buf: Buffer, outs: list[LossOut]) -> dict[str, float]:
        return {
            "loss/total": self._avg(outs, "loss"),
            "loss/policy": self._avg(outs, "pg_loss"),
            "loss/value": self._avg(outs, "vf_loss"),
            "reward/sentence": self._per_seq(buf.sentence_rewards),
            "reward/total": self._per_seq(buf.rewards),
            "objective/kl": self._per_seq(buf.kl),  # the estimator in the reward, summed per rationale
            "policy/clipfrac": self._avg(outs, "pg_clipfrac"),
            "policy/approxkl": self._avg(outs, "approx_kl"),
            "policy/ratio": self._avg(outs, "ratio"),
            "val/clipfrac": self._avg(outs, "vf_clipfrac"),
        }

    def _metrics(self, buf: Buffer, outs: list[Any], epoch: int, started: float) -> dict[str, float]:
        return {
            **self._loss_metrics(buf, outs),
            "objective/kl_current": self._gathered_kl_now(),  # k3 (>= 0) of the policy now vs the reference
            "lr": self.lr_scheduler.get_last_lr()[0],
            "ppo_epoch": epoch,
            "step": self.state.global_step,
            "elapsed_s": round(time.time() - started, 3),
        }

    def _gathered_kl_now(self) -> float:
        value = torch.stack(self._kl_now).mean().reshape(1)
        self._kl_now = []
        return self.accelerator.gather_for_metrics(value).mean().item()

    def train(self, resume_from: Path | None = None) -> list[dict[str, float]]:  # type: ignore[override]
        """Run every buffer's PPO epochs; resumes from `resume_from` (a checkpoint dir) when given."""
        args, history = self.args, []
        self.state.max_steps, self.state.global_step = self.total_steps, 0
        done, buf = (-1, -1), None
        if resume_from is not None:
            done, buf = self._load_checkpoint(resume_from)
        if self.behaviour is None:  # before any update: the log-probs of the policy that sampled them
            self.behaviour = self._behaviour()
        self.model.train()
        self.control = self.callback_handler.on_train_begin(args, self.state, self.control)
        started = time.time()
        for b, rows in enumerate(self._buffers()):
            if b < done[0] or (b == done[0] and done[1] + 1 >= args.num_ppo_epochs):
                continue
            if buf is None or b != done[0]:
                buf = self._score_buffer(b * self.buffer_size, rows)
            for epoch in range(args.num_ppo_epochs):
                if b == done[0] and epoch <= done[1]:
                    continue
                gen = torch.Generator().manual_seed(args.seed * 1_000_003 + b * 1009 + epoch)
                order = torch.randperm(len(rows), generator=gen)
                outs = []
                for i in range(0, len(rows), self.mini_batch_size):
                    outs.append(self._mini_batch(buf, order[i : i + self.mini_batch_size]))
                    self.state.global_step += 1
                    if self.on_step:
                        self.on_step(self.state.global_step, self.total_steps)
                metrics = self._metrics(buf, outs, epoch, started)
                metrics["buffer"] = b
                history.append(metrics)
                self.log(metrics)
                self._write_jsonl(metrics)
                self._save_checkpoint_state(b, epoch, buf)
        self.control = self.callback_handler.on_train_end(args, self.state, self.control)
        return history

    # -- logs and checkpoints --
    def _write_jsonl(self, metrics: dict[str, float]) -> None:
        if self.log_path is not None and self.accelerator.is_main_process:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(metrics) + "\n")

    def checkpoint_dir(self) -> Path:
        return Path(self.args.output_dir) / "checkpoint"

    def _save_checkpoint_state(self, b: int, epoch: int, buf: Buffer) -> None:
        """Write the checkpoint next to the previous one and swap it in whole (a crash keeps the old one)."""
        if self.args.save_strategy == "no":
            return
        acc, folder = self.accelerator, self.checkpoint_dir()
        tmp, old = folder.with_name("checkpoint.tmp"), folder.with_name("checkpoint.old")
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=False)
        torch.save({k: v.cpu() for k, v in buf.tensors().items()}, tmp / f"buffer-{acc.process_index}.pt")
        behaviour = {k: [t.cpu() for t in v] for k, v in (self.behaviour or {}).items()}
        torch.save(behaviour, tmp / f"behaviour-{acc.process_index}.pt")
        acc.wait_for_everyone()
        if acc.is_main_process:
            progress = {
                "buffer": b,
                "ppo_epoch": epoch,
                "global_step": self.state.global_step,
                "run_key": self.run_key,
            }
            (tmp / "progress.json").write_text(json.dumps(progress))
            shutil.rmtree(old, ignore_errors=True)
            if folder.exists():
                folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    def _load_checkpoint(self, folder: Path) -> tuple[tuple[int, int], Buffer | None]:
        progress = json.loads((folder / "progress.json").read_text())
        self.accelerator.load_state(str(folder))
        self.state.global_step = progress["global_step"]
        b = progress["buffer"]
        saved = torch.load(folder / f"buffer-{self.accelerator.process_index}.pt")
        device = self.accelerator.device
        behaviour = torch.load(folder / f"behaviour-{self.accelerator.process_index}.pt")
        self.behaviour = {k: [t.to(device) for t in v] for k, v in behaviour.items()}
        buf = Buffer(
            self._buffers()[b],
            **{
                k: v.to(device)
                for k, v in saved.items()
                if k in ("mask", "sentence_rewards", "logprobs", "ref_logprobs", "values")
            },
        )
        for k in ("advantages", "returns", "rewards", "kl"):
            setattr(buf, k, saved[k].to(device))
        return (b, progress["ppo_epoch"]), buf

    def unwrapped_policy(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model).policy
