"""Training randomness keyed to the sample, so that a run's result does not depend on how many
processes, accumulation steps or loader workers compute it.

Every training item is a position ``p`` in the run's data stream (engine/distributed.py,
``IterationBatchSampler``: iteration ``i`` takes positions ``[i * B, (i + 1) * B)``). Its key is
``sample_key(train.seed, p)``, a 63-bit hash. Before the dataset reads the item, torch's, numpy's
and Python's global generators are seeded with the key (in whichever process reads it: a loader
worker or the main process), so its random clip, crop, scale and flip, and the video that
replaces an unreadable one, are functions of the key alone. The key travels with the item into
the batch (``sample_keys``, Tensor[B] int64) and the model draws the item's dropout mask from a
generator seeded with it (strg/models/strg.py, ``keyed_dropout``).

So with the same global batch the weights after each iteration are the same (up to the order of
floating-point sums: all-reduce over processes vs accumulation in one) for any number of
processes, any ``batch_per_device`` and any ``num_workers``, and a resumed run draws exactly what
an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch
from torch.utils.data import Dataset


def sample_key(seed: int, position: int) -> int:
    """The key (an int in [0, 2**63)) of stream position ``position`` of a run seeded ``seed``."""
    digest = hashlib.blake2b(f"strg-sample:{seed}:{position}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seed_everything(key: int) -> None:
    """Seed torch's CPU generator, numpy's and Python's global generators with ``key``."""
    torch.default_generator.manual_seed(key)
    np.random.seed(key % 2**32)
    random.seed(key)


class KeyedItems(Dataset):
    """``dataset`` read at ``(index, position)`` pairs: seeds the global generators with the
    position's key, reads ``dataset[index]`` and adds ``"sample_key"`` to the item (None stays
    None: a skipped item)."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index_position: tuple[int, int]):
        index, position = index_position
        key = sample_key(self.seed, position)
        seed_everything(key)
        item = self.dataset[index]
        if isinstance(item, dict):
            item = {**item, "sample_key": key}
        return item


class KeyedCollate:
    """``collate_fn`` plus ``batch["sample_keys"]`` (Tensor[B] int64), the keys of the items kept
    (a skipped item, None, is dropped by the collate function and has no key)."""

    def __init__(self, collate_fn):
        self.collate_fn = collate_fn

    def __call__(self, items: list) -> dict:
        batch = self.collate_fn(items)
        keys = [it["sample_key"] for it in items if it is not None]
        batch["sample_keys"] = torch.tensor(keys, dtype=torch.int64)
        return batch


__all__ = ["KeyedCollate", "KeyedItems", "sample_key", "seed_everything"]
