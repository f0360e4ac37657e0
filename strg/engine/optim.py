"""SGD and the learning-rate schedule of section 6.1.

lr 0.00125 for a global batch of 8 clips, scaled linearly with the global batch, divided by 10
for the last 10% of the iterations; optional linear warmup (not in the paper). fp16 training
scales the loss (``torch.amp.GradScaler``).
"""

from __future__ import annotations

import warnings

import torch

from strg.config import TrainConfig


def lr_at(iteration: int, *, lr: float, iterations: int, decay_at: float, decay: float, warmup_iters: int,
          warmup_factor: float) -> float:
    """Learning rate of a (0-based) iteration: step decay for the last (1 - decay_at) of the run
    (section 6.1: x0.1 for the last 10K of 100K) and an optional linear warmup."""
    factor = decay if iteration >= round(decay_at * iterations) else 1.0
    if iteration < warmup_iters:
        factor *= warmup_factor + (1.0 - warmup_factor) * iteration / warmup_iters
    return lr * factor


class Optimization:
    """Optimizer, lr scheduler and gradient scaler of a run, saved and restored together."""

    def __init__(self, params: list, t: TrainConfig, *, fp16: bool, device_type: str):
        self.params, self.grad_clip = params, t.grad_clip
        self.lr = t.base_lr * t.batch_size / t.base_batch  # linear scaling with the global batch
        schedule = dict(lr=self.lr, iterations=t.iterations, decay_at=t.lr_decay_at, decay=t.lr_decay,
                        warmup_iters=t.warmup_iters, warmup_factor=t.warmup_factor)
        self.optimizer = torch.optim.SGD(params, lr=self.lr, momentum=t.momentum, weight_decay=t.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda i: lr_at(i, **schedule) / self.lr)
        self.scaler = torch.amp.GradScaler(device_type, enabled=fp16)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self) -> float:
        """Clip (optional), step, zero the gradients, advance the schedule; returns the lr used."""
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        lr_used = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # fp16: the scaler skips steps with inf gradients; expected
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.scheduler.step()
        return lr_used

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
