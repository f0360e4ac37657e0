"""The run settings a backbone's source decides: filled into a resolved config before anything is built.

A Kinetics I3D checkpoint computes what it computed in the code that trained it only with that
code's stem pooling, non-local variant, pool2 kernel and input normalisation
(:mod:`strg.models.sources`). ``model.backbone_source`` names them all; left null, it is read
from ``model.backbone_checkpoint`` (or is ``"strg"`` without one). Then ``model.pool2_kernel``,
``data.mean`` and ``data.std`` left null take the source's values, and values set explicitly
that differ from the source's are reported. The filled config is what the run saves
(``config.yaml``, checkpoints), so later stages and ``strg eval`` compare against the values
actually used (``stage_checks.BACKBONE_SETTINGS``).
"""

from __future__ import annotations

import math

from strg.config import RunConfig
from strg.models.weights import resolve_backbone_source

def _resolved(cfg: RunConfig) -> bool:
    options = cfg.data.options
    return (cfg.model.backbone_source is not None and cfg.model.pool2_kernel is not None
            and all(getattr(options, k, 0) is not None for k in ("mean", "std")))


def apply_backbone_source(cfg: RunConfig) -> list[str]:
    """Fill, in place, the null settings of ``cfg`` that the backbone source decides.

    Returns notes for the run log: what was filled, and explicit settings that differ from the
    source's. Raises CheckpointError (naming the file) when the checkpoint cannot be read or
    contradicts an explicit ``model.backbone_source``.
    """
    if _resolved(cfg):
        return []
    model, options, where = cfg.model, cfg.data.options, cfg.source
    src, how = resolve_backbone_source(model.backbone_checkpoint, model.backbone_source)
    notes = []
    if model.backbone_source is None:
        model.backbone_source = src.name
        notes.append(f"model.backbone_source: {src.name} ({how})")
    if model.pool2_kernel is None:
        model.pool2_kernel = src.pool2_kernel
    elif model.pool2_kernel != src.pool2_kernel:
        notes.append(f"{where}: model.pool2_kernel is {model.pool2_kernel}; "
                     f"source {src.name!r} used {src.pool2_kernel}")
    for key, value in (("mean", src.data_mean), ("std", src.data_std)):
        if not hasattr(options, key):
            continue  # a dataset kind without normalisation options
        if getattr(options, key) is None:
            setattr(options, key, tuple(value))
        elif not all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(getattr(options, key), value)):
            notes.append(
                f"{where}: data.{key} is {list(getattr(options, key))}; source {src.name!r} normalised with "
                f"{list(value)} (RGB, 0-1): the backbone sees other inputs than it was trained on"
            )
    return notes
