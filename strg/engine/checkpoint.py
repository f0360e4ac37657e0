"""Checkpoints: atomic writes, safe loading, clear mismatch reports, stage-wise initialisation.

A checkpoint is a ``torch.save``d dict::

    {"format": "strg-checkpoint", "version": 1, "iteration": int, "variant": str,
     "num_classes": int, "model": state_dict, "optimizer": ..., "scheduler": ..., "scaler": ...,
     "rng": [per-rank RNG states], "config": resolved config dict,
     "classes": [class names], "multi_label": bool}   # what `strg predict` needs besides the config

It is written to ``<name>.tmp<pid>``, flushed to disk, then renamed over ``<name>`` (``os.replace``
is atomic on POSIX), so a crash during the write never leaves a broken file under the final name
and never touches the previous checkpoint. Loading uses ``weights_only=True``: no code runs.

Stage-wise training (paper section 6.1): ``backbone`` -> ``graph`` -> ``joint``. See
:func:`load_for_stage` for what each stage takes from the previous stage's checkpoint.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from strg.errors import CheckpointError

FORMAT = "strg-checkpoint"
_CKPT_NAME = re.compile(r"^ckpt_(\d+)\.pt$")


# --------------------------------------------------------------------------------------------------
# RNG states (saved as tensors and plain Python so that weights_only loading accepts them)


def get_rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "python": _to_lists(random.getstate()),
    }


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, (tuple, list)) else x


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(_to_tuples(state["python"]))


# --------------------------------------------------------------------------------------------------
# Saving and loading


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` (see the module docstring) atomically: temporary file, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, "version": 1, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        try:  # make the rename itself durable before older checkpoints are pruned
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:  # directories cannot be fsynced on some file systems (e.g. Windows)
            pass
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint on the CPU. A plain state dict is accepted too (returned as
    ``{"model": state_dict}``). Truncated or corrupt files raise CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # zip reader errors, unpickling errors, EOF
        size = path.stat().st_size
        raise CheckpointError(
            f"{path}: cannot read the checkpoint ({size} bytes): truncated or corrupt? "
            f"({type(e).__name__}: {str(e)[:200]})"
        ) from None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        model = obj.get("model")
        if not isinstance(model, dict) or not all(isinstance(v, torch.Tensor) for v in model.values()):
            raise CheckpointError(f"{path}: damaged strg checkpoint: 'model' is not a state dict of tensors")
        return obj
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        return obj
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"model": obj}
    raise CheckpointError(f"{path}: not a strg checkpoint or a state dict")


def checkpoint_path(run_dir: str | os.PathLike, iteration: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"ckpt_{iteration:07d}.pt"


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(iteration, path) of the run's checkpoints, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT_NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(run_dir: str | os.PathLike, warn=print) -> tuple[Path, dict] | None:
    """The newest checkpoint of a run that loads; broken newer ones are reported and skipped."""
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as e:
            warn(f"warning: skipping {e}; trying the previous checkpoint")
    return None


def prune_checkpoints(run_dir: str | os.PathLike, keep: int, protect: tuple[Path, ...] = ()) -> None:
    """Delete all but the ``keep`` newest checkpoints (0 keeps all)."""
    if keep <= 0:
        return
    for _, path in list_checkpoints(run_dir)[:-keep]:
        if path not in protect:
            path.unlink(missing_ok=True)


def resolve_init(path: str | os.PathLike) -> Path:
    """``train.init`` may name a checkpoint file or a run folder (its newest checkpoint)."""
    path = Path(path)
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise CheckpointError(f"{path}: a run folder without checkpoints (looked in {path / 'checkpoints'})")
        return found[-1][1]
    return path


# --------------------------------------------------------------------------------------------------
# Loading weights into a model


def _describe(model: nn.Module) -> str:
    variant = getattr(model, "variant", type(model).__name__)
    num_classes = getattr(getattr(model, "classifier", None), "out_features", "?")
    return f"{variant} with {num_classes} classes"


def _source_description(ckpt: dict) -> str:
    if "variant" in ckpt:
        return f"{ckpt['variant']} with {ckpt.get('num_classes', '?')} classes"
    return "a plain state dict"


def compare_state(model: nn.Module, state: dict) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, wrong shape) keys of ``state`` against ``model.state_dict()``."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    return missing, unexpected, shape


def _mismatch_message(path, model, ckpt, missing, unexpected, shape, limit: int = 8) -> str:
    lines = [f"{path}: checkpoint of {_source_description(ckpt)} does not fit the model {_describe(model)}:"]
    for title, keys in (("wrong shape", shape), ("missing from the checkpoint", missing),
                        ("not in the model", unexpected)):
        if keys:
            modules: dict[str, int] = {}
            for k in keys:
                modules[k.split(".", 1)[0]] = modules.get(k.split(".", 1)[0], 0) + 1
            per_module = ", ".join(f"{m} {n}" for m, n in modules.items())
            shown = "; ".join(keys[:limit]) + (f"; ... ({len(keys) - limit} more)" if len(keys) > limit else "")
            lines.append(f"  {len(keys)} {title} ({per_module}): {shown}")
    return "\n".join(lines)


def load_model_state(model: nn.Module, ckpt: dict, path="<checkpoint>") -> None:
    """Load ``ckpt["model"]`` strictly; any difference raises CheckpointError listing the keys."""
    state = ckpt["model"]
    missing, unexpected, shape = compare_state(model, state)
    if missing or unexpected or shape:
        raise CheckpointError(_mismatch_message(path, model, ckpt, missing, unexpected, shape))
    model.load_state_dict(state)


# Section 6.1 stage-wise training: which model parts a stage takes from its init checkpoint.
#   backbone: ``backbone.*`` must all be there (e.g. a Kinetics-pretrained I3D in strg format);
#             any other key with the right shape is taken too (e.g. the classifier of a run
#             with the same classes).
#   graph:    ``backbone.*`` must all be there (the ``backbone`` stage's checkpoint); ``reduce.*``
#             is taken if present; the head (graph head, classifier) starts fresh. The backbone
#             (and ``reduce`` when it came from the checkpoint) is frozen.
#   joint:    the whole model must be there (the ``graph`` stage's checkpoint).
STAGES = ("backbone", "graph", "joint")


def load_for_stage(model: nn.Module, ckpt: dict, stage: str, path="<checkpoint>") -> dict:
    """Initialise ``model`` for a training ``stage`` from ``ckpt`` (see STAGES above).

    Returns a report ``{"loaded": [...keys], "skipped": [...keys of the checkpoint not used],
    "fresh": [...model keys left at their initial values]}``.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; one of {STAGES}")
    state = ckpt["model"]
    own = model.state_dict()
    if stage == "joint":
        load_model_state(model, ckpt, path)
        return {"loaded": list(own), "skipped": [], "fresh": []}
    required = [k for k in own if k.startswith("backbone.")]
    missing, _, _ = compare_state(model, state)
    req_missing = [k for k in required if k not in state]
    req_shape = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                 for k in required if k in state and state[k].shape != own[k].shape]
    if req_missing or req_shape:
        raise CheckpointError(
            _mismatch_message(path, model, ckpt, req_missing, [], req_shape)
            + f"\n  (stage {stage!r} needs the whole backbone from its init checkpoint)"
        )
    take = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    if stage == "graph":  # only the I3D part; the graph head and classifier start fresh
        take = {k: v for k, v in take.items() if k.startswith(("backbone.", "reduce."))}
    model.load_state_dict(take, strict=False)
    return {
        "loaded": sorted(take),
        "skipped": sorted(k for k in state if k not in take),
        "fresh": sorted(k for k in own if k not in take),
    }


def freeze_for_stage(model: nn.Module, stage: str, loaded: list[str] | None = None) -> list[str]:
    """Stage ``graph`` (section 6.1, "we fix the I3D features"): freeze ``backbone`` and, if it
    came from the checkpoint, ``reduce``. Returns the names of the frozen parameters."""
    if stage != "graph":
        return []
    loaded_set = set(loaded or [])
    frozen = []
    for name, p in model.named_parameters():
        if name.startswith("backbone.") or (name.startswith("reduce.") and name in loaded_set):
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def summarize_report(report: dict) -> str:
    """One line: counts per top-level module of loaded / fresh tensors."""

    def by_module(keys):
        counts: dict[str, int] = {}
        for k in keys:
            top = k.split(".", 1)[0]
            counts[top] = counts.get(top, 0) + 1
        return ", ".join(f"{m} {n}" for m, n in counts.items()) or "none"

    return (f"loaded {len(report['loaded'])} tensors ({by_module(report['loaded'])}); "
            f"left at init: {by_module(report['fresh'])}; unused from the checkpoint: {len(report['skipped'])}")


# --------------------------------------------------------------------------------------------------
# The checkpoints of a training run


class RunCheckpoints:
    """Writes a run's checkpoints (rank 0) with everything ``--resume`` needs, keeps the newest
    ``keep`` and remembers the last one written (named when training diverges)."""

    def __init__(self, run_dir, model: nn.Module, opt, *, info, keep: int, meta: dict):
        self.run_dir, self.model, self.opt = Path(run_dir), model, opt
        self.info, self.keep, self.meta = info, keep, meta
        found = list_checkpoints(self.run_dir)
        self.last: Path | None = found[-1][1] if found else None

    def save(self, iteration: int, rng_states: list) -> Path:
        path = checkpoint_path(self.run_dir, iteration)
        save_checkpoint(path, {"iteration": iteration, **self.meta, "model": self.model.state_dict(),
                               **self.opt.state_dict(), "rng": rng_states})
        prune_checkpoints(self.run_dir, self.keep)
        return path

    def periodic(self, iteration: int, rng_state: dict, all_gather) -> None:
        """Every rank's RNG state at the end of ``iteration``, written by rank 0."""
        rng_states = all_gather(rng_state, self.info)
        if self.info.is_main:
            self.last = self.save(iteration, rng_states)

    def interrupted(self, iteration: int, start: int, rng_state: dict, log) -> None:
        """Ctrl-C: keep what was trained (weights after ``iteration`` iterations, RNG at that point)."""
        if self.info.is_main and iteration > start:
            path = self.save(iteration, [rng_state])
            log.info(f"interrupted at iteration {iteration}: checkpoint {path}; continue with --resume")
