"""The run settings a backbone's source decides: filled into a resolved config before anything is built.

A Kinetics I3D checkpoint computes what it computed in the code that trained it only with that
code's stem pooling, non-local variant, pool2 kernel and input normalisation
(:mod:`strg.models.sources`). ``model.backbone_source`` names them all; left null, it is read
from ``model.backbone_checkpoint`` (or is ``"strg"`` without one). Then ``model.pool2_kernel``,
``data.mean`` and ``data.std`` left null take the source's values, and values set explicitly
that differ from the source's are reported. The filled config is what the run saves
(``config.yaml``, checkpoints), so later stages and ``strg eval`` compare against the values
actually used (``trainer._BACKBONE_SETTINGS``).
"""

from __future__ import annotations

import math

from strg.models.weights import resolve_backbone_source

_FILLED = ("backbone_source", "pool2_kernel")


def _resolved(cfg: dict) -> bool:
    model, data = cfg["model"], cfg["data"]
    return all(model.get(k) is not None for k in _FILLED) and all(
        data.get(k) is not None for k in ("mean", "std") if k in data
    )


def apply_backbone_source(cfg: dict, source: str = "<config>") -> list[str]:
    """Fill, in place, the null settings of ``cfg`` that the backbone source decides.

    Returns notes for the run log: what was filled, and explicit settings that differ from the
    source's. Raises CheckpointError (naming the file) when the checkpoint cannot be read or
    contradicts an explicit ``model.backbone_source``.
    """
    if _resolved(cfg):
        return []
    model, data = cfg["model"], cfg["data"]
    src, how = resolve_backbone_source(model.get("backbone_checkpoint"), model.get("backbone_source"))
    notes = []
    if model.get("backbone_source") is None:
        model["backbone_source"] = src.name
        notes.append(f"model.backbone_source: {src.name} ({how})")
    if model.get("pool2_kernel") is None:
        model["pool2_kernel"] = src.pool2_kernel
    elif model["pool2_kernel"] != src.pool2_kernel:
        notes.append(
            f"{source}: model.pool2_kernel is {model['pool2_kernel']}; source {src.name!r} used {src.pool2_kernel}"
        )
    for key, value in (("mean", src.data_mean), ("std", src.data_std)):
        if key not in data:
            continue  # a dataset kind without normalisation options
        if data[key] is None:
            data[key] = tuple(value)
        elif not all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(data[key], value)):
            notes.append(
                f"{source}: data.{key} is {list(data[key])}; source {src.name!r} normalised with {list(value)} "
                "(RGB, 0-1): the backbone sees other inputs than it was trained on"
            )
    return notes
