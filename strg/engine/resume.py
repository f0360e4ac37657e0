"""``--resume``: continue a run from its newest checkpoint, or refuse with the reason.

A resume continues the run that the checkpoint belongs to. It is refused (``ConfigError``) when

* it would train nothing: the checkpoint's iteration is already ``train.iterations`` or past it;
* the settings differ from those saved in the checkpoint, other than the keys of
  :data:`FREE_ON_RESUME` (where the run is logged and checkpointed, how the data is loaded: they do
  not change what is trained). A changed schedule, model, data or seed would silently train
  another run than the one in the folder. ``allow_config_change=True`` (``strg train --resume
  --allow-config-change``) accepts them: the changed keys are logged with both values, and the
  run's ``config.yaml`` is replaced by the new settings only then.

The check runs before anything is written to the run folder, so a refused resume leaves it as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from strg.engine import checkpoint as ckpt_lib
from strg.errors import ConfigError

# Keys that may change on resume without --allow-config-change: they do not change the weights a
# run ends with (data order, augmentation and dropout are keyed to the sample's position in the
# data stream, not to the loader's workers or segments, see engine/sample_keys.py).
FREE_ON_RESUME = frozenset({
    "train.progress", "train.tensorboard", "train.log_period", "train.checkpoint_period",
    "train.keep_checkpoints", "train.num_workers",
    "eval.split", "eval.combine", "eval.scores", "eval.batch_per_device", "eval.num_workers", "eval.max_videos",
})


@dataclass
class ResumePoint:
    """The checkpoint a run continues from: ``path``, its ``state`` dict and ``iteration``;
    ``changed``: ``"key: old -> new"`` for every setting that differs (free ones included);
    ``notes``: warnings met on the way (a broken newer checkpoint that was skipped);
    ``rewrite_config``: settings outside FREE_ON_RESUME changed (allowed), so the run's
    ``config.yaml`` is to be replaced by the new ones."""

    path: Path
    state: dict
    iteration: int
    changed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rewrite_config: bool = False


def _plain(v):
    return [_plain(x) for x in v] if isinstance(v, (list, tuple)) else v


def config_differences(old: dict, new: dict) -> dict[str, tuple]:
    """``{"section.key": (old value, new value)}`` for every key whose value differs between two
    resolved configs. A key missing on one side counts as ``"<unset>"``, except against None: a
    key that a newer strg added with the default None (or removed, at None) is no change."""
    out = {}
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section) or {}, new.get(section) or {}
        if not isinstance(a, dict) or not isinstance(b, dict):
            if _plain(a) != _plain(b):
                out[section] = (a, b)
            continue
        for key in list(b) + [k for k in a if k not in b]:
            before, after = a.get(key, "<unset>"), b.get(key, "<unset>")
            if (key not in a and after is None) or (key not in b and before is None):
                continue  # a key another strg version added or removed, at None
            if _plain(before) != _plain(after):
                out[f"{section}.{key}"] = (before, after)
    return out


def describe_changes(old: dict, new: dict) -> list[str]:
    """``"section.key: old -> new"`` for every key :func:`config_differences` finds."""
    return [f"{k}: {a!r} -> {b!r}" for k, (a, b) in config_differences(old, new).items()]


def find_resume_point(run_dir: str | Path, cfg, *, allow_config_change: bool = False) -> ResumePoint | None:
    """The newest readable checkpoint of ``run_dir`` checked against ``cfg`` (a
    :class:`strg.config.RunConfig`; module docstring); None when the run folder has no readable
    checkpoint (the run starts at iteration 0)."""
    source = cfg.source
    notes: list[str] = []
    found = ckpt_lib.latest_checkpoint(run_dir, warn=notes.append)
    if found is None:
        return None
    path, state = found
    iteration = int(state.get("iteration", 0))
    saved = state.get("config") or {}
    differ = config_differences(saved, cfg.to_dict()) if saved else {}
    changed = [f"{k}: {a!r} -> {b!r}" for k, (a, b) in differ.items()]
    locked = [c for k, c in zip(differ, changed) if k not in FREE_ON_RESUME]
    total = cfg.train.iterations
    if iteration >= total:
        state_text = ("the run is complete" if iteration == total else
                      "train.iterations is below the iteration the run has reached")
        raise ConfigError(
            f"{source}: --resume: nothing to train: {state_text} ({path} is at iteration {iteration}, "
            f"train.iterations is {total}); evaluate it with `strg eval`, or raise train.iterations and pass "
            "--allow-config-change to train further"
        )
    if locked and not allow_config_change:
        raise ConfigError(
            f"{source}: --resume: the settings differ from those of {path} ({'; '.join(locked)}); the run would "
            "continue as another run than the one in its folder. Use the run's own settings (strg train "
            f"{Path(run_dir) / 'config.yaml'} --run-dir {run_dir} --resume), another run folder, or pass "
            "--allow-config-change to continue with the new settings"
        )
    return ResumePoint(path=path, state=state, iteration=iteration, changed=changed, notes=notes,
                       rewrite_config=bool(locked))


__all__ = ["FREE_ON_RESUME", "ResumePoint", "config_differences", "describe_changes", "find_resume_point"]
