"""The LoRA training loop of the trainer worker: a plain torch loop over a peft model.

Deterministic from the options' seed: the order of the examples in epoch e is a permutation
seeded with seed + e, so a run resumed at step N takes the same batches a run that never
stopped would have taken. A checkpoint (adapter weights, optimizer state, torch RNG, step) is
written every `checkpoint_every` steps and at the end, into `step-NNNNNN/` under the checkpoint
directory, made in a temporary directory and renamed into place: a kill -9 leaves either the
previous checkpoint or the new one, never half of one. Only the latest is kept.

Runs on one thread of the worker (worker.py); `emit` hands each step's TrainResponse to the
event loop, `cancelled` stops it before the next step. torch, transformers and peft are
imported by the caller: this module is only ever imported inside the worker.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ohmygpu.core.train_data import Example
from ohmygpu.runtime.v1 import runtime_pb2

log = logging.getLogger("ohmygpu.worker.trainer")
_STATE = "trainer_state.pt"
_PREFIX = "step-"
_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


class Cancelled(Exception):
    """The stream went away: training stopped before the next step (the checkpoint stays)."""


@dataclass(frozen=True)
class Plan:
    """TrainOptions with their defaults filled in (runtime.proto says what each default is)."""

    epochs: int
    max_steps: int
    learning_rate: float
    batch_size: int
    rank: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]
    max_length: int
    seed: int
    checkpoint_every: int

    @classmethod
    def of(cls, o: runtime_pb2.TrainOptions) -> Plan:
        rank = o.lora_rank or 8
        return cls(epochs=o.epochs or (0 if o.max_steps else 3), max_steps=o.max_steps,
                   learning_rate=o.learning_rate if o.HasField("learning_rate") else 2e-4,
                   batch_size=o.batch_size or 4, rank=rank,
                   alpha=o.lora_alpha if o.HasField("lora_alpha") else 2.0 * rank,
                   dropout=o.lora_dropout if o.HasField("lora_dropout") else 0.05,
                   target_modules=tuple(o.target_modules), max_length=o.max_length or 512,
                   seed=o.seed if o.HasField("seed") else 0, checkpoint_every=o.checkpoint_every or 10)

    def total_steps(self, examples: int) -> int:
        per_epoch = math.ceil(examples / self.batch_size)
        if self.max_steps and self.epochs:
            return min(self.max_steps, self.epochs * per_epoch)
        return self.max_steps or self.epochs * per_epoch


def target_modules(model: Any, asked: tuple[str, ...]) -> list[str]:
    """The module names to adapt: those asked, else the attention projections the model has."""
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    if asked:
        missing = [m for m in asked if m not in names]
        if missing:
            raise ValueError(f"the model has no module named {', '.join(missing)}")
        return list(asked)
    found = [m for m in _ATTENTION if m in names]
    if not found:
        raise ValueError("the model has none of q_proj/k_proj/v_proj/o_proj: name target_modules")
    return found


def encode(tokenizer: Any, example: Example, max_length: int) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one example: labels are -100 where the loss is not computed (a
    prompt, the turns before the last assistant message), cut to `max_length` tokens."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    if example.kind == "chat":
        messages = [{"role": r, "content": c} for r, c in example.messages]
        if getattr(tokenizer, "chat_template", None):
            full = tokenizer.apply_chat_template(messages, tokenize=False)
            head = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        else:
            full = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
            head = "".join(f"{m['role']}: {m['content']}\n" for m in messages[:-1]) + "assistant: "
        if full.startswith(head):
            prompt, target = ids(head), ids(full[len(head):])
        else:  # a template that renders history differently: learn the whole conversation
            prompt, target = [], ids(full)
    elif example.kind == "completion":
        prompt, target = ids(example.prompt), ids(example.target) + eos
    else:
        prompt, target = [], ids(example.target) + eos
    input_ids = (prompt + target)[:max_length]
    labels = ([-100] * len(prompt) + target)[:max_length]
    return input_ids, labels


def _batch(encoded: list[tuple[list[int], list[int]]], pad: int, device: str) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in encoded)
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, (i, lab) in enumerate(encoded):
        ids[row, :len(i)] = torch.tensor(i)
        labels[row, :len(lab)] = torch.tensor(lab)
        mask[row, :len(i)] = 1
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}


def latest_checkpoint(directory: Path) -> tuple[int, Path] | None:
    """(step, path) of the newest complete checkpoint under `directory`, or None."""
    best: tuple[int, Path] | None = None
    if not directory.is_dir():
        return None
    for p in directory.iterdir():
        if p.name.startswith(_PREFIX) and p.name[len(_PREFIX):].isdigit() and (p / _STATE).is_file():
            step = int(p.name[len(_PREFIX):])
            if best is None or step > best[0]:
                best = (step, p)
    return best


def save_checkpoint(directory: Path, step: int, model: Any, optimizer: Any) -> None:
    """Write the checkpoint of `step` atomically (a temporary directory renamed into place,
    its files fsync'd first), then drop the older ones."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{_PREFIX}{step:06d}"
    tmp = directory / f".tmp-{step:06d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()}, tmp / _STATE)
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    for p in directory.iterdir():
        if p != final and (p.name.startswith(_PREFIX) or p.name.startswith(".tmp-")):
            shutil.rmtree(p, ignore_errors=True)


def _resume(path: Path, model: Any, optimizer: Any) -> int:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(path / "adapter_model.safetensors")))
    state = torch.load(path / _STATE, weights_only=True)  # never unpickle code
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    return int(state["step"])


def train(base: Any, tokenizer: Any, examples: list[Example], plan: Plan, *, device: str,
          checkpoint_dir: Path, output_dir: Path, emit: Callable[[runtime_pb2.TrainResponse], None],
          cancelled: threading.Event) -> tuple[Any, float, int]:
    """Train a LoRA adapter over `base`; returns (the peft model, the last loss, steps done),
    with the adapter saved to `output_dir`. Raises Cancelled, ValueError (bad options)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(plan.seed)
    config = LoraConfig(r=plan.rank, lora_alpha=plan.alpha, lora_dropout=plan.dropout,
                        target_modules=target_modules(base, plan.target_modules), task_type="CAUSAL_LM")
    model = get_peft_model(base, config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=plan.learning_rate, weight_decay=0.0)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    encoded = [encode(tokenizer, e, plan.max_length) for e in examples]
    total = plan.total_steps(len(encoded))
    per_epoch = math.ceil(len(encoded) / plan.batch_size)
    step = resumed = 0
    found = latest_checkpoint(checkpoint_dir)
    if found is not None:
        step = resumed = min(_resume(found[1], model, optimizer), total)
        log.info("resumed from the checkpoint of step %d", step)
    emit(runtime_pb2.TrainResponse(step=step, total_steps=total, resumed_from_step=resumed, stage="training",
                                   learning_rate=plan.learning_rate, epoch=step / per_epoch))
    model.train()
    loss_value = float("nan")
    while step < total:
        if cancelled.is_set():
            raise Cancelled()
        epoch, within = divmod(step, per_epoch)
        order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(plan.seed + epoch))
        rows = [encoded[int(i)] for i in order[within * plan.batch_size:(within + 1) * plan.batch_size]]
        out = model(**_batch(rows, pad, device))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        loss_value = float(out.loss.detach())
        saved = step % plan.checkpoint_every == 0 or step == total
        if saved:
            save_checkpoint(checkpoint_dir, step, model, optimizer)
        emit(runtime_pb2.TrainResponse(step=step, total_steps=total, loss=loss_value, stage="training",
                                       learning_rate=plan.learning_rate, epoch=step / per_epoch,
                                       checkpoint_step=step if saved else 0))
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    (output_dir / "omg_training.json").write_text(json.dumps(
        {"steps": step, "final_loss": loss_value, "rank": plan.rank, "alpha": plan.alpha,
         "target_modules": list(config.target_modules)}))
    return model, loss_value, step
