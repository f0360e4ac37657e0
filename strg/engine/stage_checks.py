"""Checks a run makes before it trains or evaluates: settings that must match between the stages
of section 6.1, and the conditions of ``train.cache_features``. Each raises ConfigError naming
what to change."""

from __future__ import annotations

from strg.config import RunConfig
from strg.errors import ConfigError


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def changed_keys(old: dict, new: dict) -> list[str]:
    """Dotted keys whose values differ between two resolved configs (plain dicts)."""
    keys = []
    for section in new:
        for key in new[section]:
            before = (old.get(section) or {}).get(key, "<unset>")
            after = new[section][key]
            if _plain(before) != _plain(after):
                keys.append(f"{section}.{key}")
    return keys


# Settings that change what the backbone computes without changing its weights' names or shapes,
# so that loading cannot catch a difference: stages ``graph`` and ``joint`` (section 6.1) and an
# evaluation must keep them, or the I3D they carry over sees other inputs than it was trained on
# (e.g. a Kinetics checkpoint's pool2 kernel 2 and 0.45 / 0.225 normalisation set for the
# ``backbone`` stage only). A ``backbone`` stage fine-tuning from a run may change them on purpose:
# it is told, not refused.
BACKBONE_SETTINGS = (("model", "pool2_kernel"), ("model", "temporal_strides"), ("model", "backbone_source"),
                     ("data", "mean"), ("data", "std"))


def check_backbone_settings(init_cfg: dict | None, cfg: RunConfig, init_path, what: str = "train.init",
                            warn=None) -> None:
    """ConfigError when the checkpoint's run (``init_cfg``, its saved config) set a key of
    BACKBONE_SETTINGS differently (with ``warn``, a function of one string, that is called instead)."""
    if not init_cfg:
        return  # not a strg run's checkpoint: nothing to compare with
    new = cfg.to_dict()
    differ = []
    for section, key in BACKBONE_SETTINGS:
        old_section, new_section = (init_cfg.get(section) or {}), new.get(section) or {}
        if key in old_section and key in new_section and changed_keys({section: {key: old_section[key]}},
                                                                        {section: {key: new_section[key]}}):
            differ.append(f"{section}.{key}: {old_section[key]!r} there, {new_section[key]!r} here")
    if differ and warn is not None:
        warn(f"{what} {init_path} was trained with other backbone settings ({'; '.join(differ)}): "
             "this run changes them")
    elif differ:
        raise ConfigError(
            f"{cfg.source}: {what} {init_path} was trained with other backbone settings ({'; '.join(differ)}); "
            "set them as in that run (the weights would load but compute something else)"
        )


def check_stage_init(cfg: RunConfig) -> None:
    """Stages ``graph`` and ``joint`` start from the previous stage's checkpoint (section 6.1)."""
    t = cfg.train
    if t.stage in ("graph", "joint") and t.init is None:
        raise ConfigError(f"{cfg.source}: train.init is required for stage {t.stage!r}: the checkpoint "
                          "(or run folder) of the previous stage")


def check_cache_features(cfg: RunConfig, backbone, distributed: bool) -> None:
    """``train.cache_features`` needs stage ``graph`` with a frozen backbone, in one process."""
    source, stage = cfg.source, cfg.train.stage
    if stage != "graph":
        raise ConfigError(f"{source}: train.cache_features needs stage 'graph' (a frozen backbone), not {stage!r}")
    if any(p.requires_grad for p in backbone.parameters()):
        raise ConfigError(f"{source}: train.cache_features: the backbone has trainable parameters, so its output "
                          "changes during training; stage graph freezes the backbone weights that train.init loads")
    if distributed:
        raise ConfigError(f"{source}: train.cache_features runs in one process; launch without torchrun")
