"""Value checks of a resolved config beyond types: each bad value is a ConfigError naming the key.

:func:`check_settings` runs after the types are checked (strg/config.py): ``model.*`` through the
model builder's own argument checks (:func:`strg.models.registry.check_build_args`), ``train.*``
and ``eval.*`` against the ranges below, ``train.device`` by its form. Whether the device exists
on this machine is checked when a run starts (:func:`strg.engine.distributed.choose_device`): a
config is valid on one machine and not on another.
"""

from __future__ import annotations

import re

from strg.errors import ConfigError

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _check_model(model, source: str) -> None:
    from strg.models.registry import check_build_args

    problems = check_build_args(num_classes=model.num_classes, **model.build_kwargs())
    if problems:
        key, why = problems[0]
        raise ConfigError(f"{source}: model.{key}: {why}")


def _check_train(t, source: str) -> None:
    def bad(key: str, why: str) -> None:
        raise ConfigError(f"{source}: train.{key}: {why}, got {getattr(t, key)!r}")

    if t.momentum < 0:
        bad("momentum", "must be >= 0")
    if t.weight_decay < 0:
        bad("weight_decay", "must be >= 0")
    if not 0.0 < t.lr_decay <= 1.0:
        bad("lr_decay", "must be in (0, 1] (the lr factor for the last part of the run)")
    if not 0.0 <= t.warmup_factor <= 1.0:
        bad("warmup_factor", "must be in [0, 1] (the lr factor warmup starts from)")
    if t.grad_clip is not None and not t.grad_clip > 0:
        bad("grad_clip", "must be positive (a maximum gradient norm) or null")
    if t.box_jitter < 0:
        bad("box_jitter", "must be >= 0 (the standard deviation of the box shifts, in box sizes)")
    if not 0.0 <= t.box_drop < 1.0:
        bad("box_drop", "must be in [0, 1) (the probability of dropping a proposal)")
    if t.seed < 0:
        bad("seed", "must be >= 0")
    if not _DEVICE.match(str(t.device)):
        bad("device", "must be auto, cpu, cuda or cuda:N")


def _check_eval(e, source: str) -> None:
    if e.num_workers < 0:
        raise ConfigError(f"{source}: eval.num_workers must be >= 0, got {e.num_workers}")
    if e.max_videos is not None and e.max_videos < 1:
        raise ConfigError(f"{source}: eval.max_videos must be >= 1 (or null: all videos), got {e.max_videos}")


def check_settings(cfg, source: str = "<config>") -> None:
    """ConfigError naming the first key of ``cfg`` (a :class:`strg.config.RunConfig`) whose value is
    out of range."""
    _check_model(cfg.model, source)
    _check_train(cfg.train, source)
    _check_eval(cfg.eval, source)


__all__ = ["check_settings"]
