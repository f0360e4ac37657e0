"""Distributed helpers: DDP set-up from torchrun's environment, rank-aware samplers, gathering.

``torchrun --nproc_per_node N strg train ...`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``; we read them like nanoGPT does. NCCL on GPUs, Gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from strg.errors import ConfigError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def choose_device(preference: str, local_rank: int = 0, *, what: str = "train.device") -> torch.device:
    """``auto``: the local rank's GPU when there is one, else the CPU. A GPU that this machine
    does not have (no CUDA, a CPU-only PyTorch, or ``cuda:N`` past the last GPU) is a ConfigError
    naming ``what`` (the setting the preference came from)."""
    if preference == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(preference)
    except RuntimeError:
        raise ConfigError(f"{what}: {preference!r} is not a device (auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            built = "a CPU-only PyTorch build" if torch.version.cuda is None else "no usable GPU or driver"
            raise ConfigError(f"{what} is {preference!r} but this machine has no CUDA device ({built}); "
                              f"use {what}=cpu or auto")
        if device.index >= count:
            raise ConfigError(f"{what} is {preference!r} (GPU {device.index}) but this machine has {count} "
                              f"CUDA device(s): cuda:0..cuda:{count - 1}")
    elif device.type != "cpu":
        raise ConfigError(f"{what}: {preference!r} is not supported (auto, cpu, cuda or cuda:N)")
    return device


def setup(device_preference: str = "auto") -> DistInfo:
    """Join the process group if torchrun started us (or one exists already)."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = choose_device(device_preference, local)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    else:
        return DistInfo(device=choose_device(device_preference, 0))
    device = choose_device(device_preference, local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=device)


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value)
        value /= info.world_size
    return value


def all_gather_objects(obj, info: DistInfo) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


class IterationBatchSampler(torch.utils.data.Sampler):
    """Micro-batches of one rank for an iteration-based schedule, reproducible from any iteration.

    The data order is one stream: epoch ``e`` is ``randperm(n)`` drawn with seed ``seed + e``.
    Iteration ``i`` uses stream positions ``[i * B, (i + 1) * B)`` (B = global batch). They are cut
    into ``world_size * accum`` micro-batches of ``batch_per_device``; rank ``r`` takes micro-batch
    ``a * world_size + r`` at accumulation step ``a``. So the global batch of an iteration does not
    depend on how many processes or accumulation steps compute it (the DDP-equivalence test), and a
    resumed run continues the same stream (the kill-and-resume test).
    """

    def __init__(self, num_items: int, *, global_batch: int, batch_per_device: int, rank: int, world_size: int,
                 seed: int, start: int, stop: int, with_positions: bool = False):
        if global_batch % (batch_per_device * world_size):
            raise ValueError(
                f"global batch {global_batch} is not a multiple of batch_per_device {batch_per_device} "
                f"x {world_size} processes"
            )
        if num_items == 0:
            raise ValueError("the training set is empty")
        self.n, self.B, self.b = num_items, global_batch, batch_per_device
        self.rank, self.world, self.seed = rank, world_size, seed
        self.accum = global_batch // (batch_per_device * world_size)
        self.start, self.stop = start, stop
        self.with_positions = with_positions  # yield (index, stream position) pairs (engine/sample_keys.py)
        self._perm: tuple[int, torch.Tensor] | None = None

    def _epoch(self, e: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != e:
            g = torch.Generator().manual_seed(self.seed + e)
            self._perm = (e, torch.randperm(self.n, generator=g))
        return self._perm[1]

    def _positions(self, start: int, count: int) -> list[int]:
        out = []
        pos = start
        while len(out) < count:
            e, off = divmod(pos, self.n)
            take = min(count - len(out), self.n - off)
            out.extend(self._epoch(e)[off : off + take].tolist())
            pos += take
        return out

    def __len__(self) -> int:
        return (self.stop - self.start) * self.accum

    def __iter__(self):
        for it in range(self.start, self.stop):
            for a in range(self.accum):
                chunk = a * self.world + self.rank
                first = it * self.B + chunk * self.b
                indices = self._positions(first, self.b)
                yield list(zip(indices, range(first, first + self.b))) if self.with_positions else indices


class ShardSampler(torch.utils.data.Sampler):
    """Indices ``rank, rank + world, ...`` of ``indices``: every item once over all ranks, no padding
    (unlike DistributedSampler, which repeats items to even the shards out)."""

    def __init__(self, indices, rank: int, world_size: int):
        self.indices = list(indices)[rank::world_size]

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)
