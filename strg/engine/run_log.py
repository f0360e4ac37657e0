"""What a run writes about itself (rank 0): ``log.txt``, ``metrics.jsonl``, TensorBoard.

:class:`RunLog` sends the engine's lines through :mod:`logging` (logger ``strg.engine``) and, for
the length of the run, copies every ``strg.*`` log record into ``<run_dir>/log.txt``, so that the
library's own reports (e.g. ``build_model``'s weight loading) land there too; ``strg`` on the
command line shows the same records in the terminal (strg/cli.py). :class:`TrainMeter` averages the
loss over a logging window and writes the ``train`` records.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

logger = logging.getLogger("strg.engine")
_STRG = logging.getLogger("strg")


class RunLog:
    """Rank-0 logging of one run; a no-op on the other ranks. Close it (or use ``with``)."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool):
        self.enabled, self.run_dir, self.tb, self._file = enabled, Path(run_dir), None, None
        if not enabled:
            return
        self._file = logging.FileHandler(self.run_dir / "log.txt", encoding="utf-8")
        self._file.setFormatter(logging.Formatter("%(message)s"))
        self._file.setLevel(logging.INFO)
        self._level = _STRG.level
        if _STRG.getEffectiveLevel() > logging.INFO:
            _STRG.setLevel(logging.INFO)
        _STRG.addHandler(self._file)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_dir / "tensorboard"))

    def info(self, text: str) -> None:
        if self.enabled:
            logger.info(text)

    def scalars(self, iteration: int, values: dict, prefix: str) -> None:
        if not self.enabled:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"iteration": iteration, "split": prefix, **values}) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(f"{prefix}/{k}", v, iteration)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self._file is not None:
            _STRG.removeHandler(self._file)
            _STRG.setLevel(self._level)
            self._file.close()
            self._file = None

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TrainMeter:
    """The ``train`` records: mean loss of the window, lr, clips/s, peak GPU memory, skipped items."""

    def __init__(self, log: RunLog, *, start: int, batch_size: int, device: torch.device):
        self.log, self.batch_size, self.device = log, batch_size, device
        self.skipped = 0  # training items replaced because they could not be read, since the start
        self._reset(start)

    def _reset(self, iteration: int) -> None:
        self.loss_sum, self.count, self.t0, self.it0 = 0.0, 0, time.time(), iteration

    def add(self, loss: float, skipped: int) -> None:
        self.loss_sum += loss
        self.count += 1
        self.skipped += skipped

    def write(self, iteration: int, lr: float) -> dict:
        elapsed = max(time.time() - self.t0, 1e-9)
        record = {"loss": self.loss_sum / self.count, "lr": lr,
                  "clips_per_s": (iteration - self.it0) * self.batch_size / elapsed}
        if self.device.type == "cuda":
            record["max_memory_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        if self.skipped:
            record["skipped"] = self.skipped
        self.log.scalars(iteration, record, "train")
        self._reset(iteration)
        return record
