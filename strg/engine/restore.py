"""Where a run starts: its own newest checkpoint (``--resume``), or the previous stage's
(``train.init``, section 6.1), or the model's starting weights; and the RNG of each process."""

from __future__ import annotations

import torch

from strg.config import RunConfig
from strg.engine import checkpoint as ckpt_lib
from strg.engine.resume import describe_changes
from strg.engine.run_log import RunLog
from strg.engine.stage_checks import check_backbone_settings, check_stage_init


def restore_weights(model, cfg: RunConfig, found: tuple | None, log: RunLog) -> int:
    """Load the resumed checkpoint (with its frozen parameters) or initialise for the stage from
    ``train.init``. Returns the iteration to start from."""
    if found is not None:
        path, state = found
        ckpt_lib.load_model_state(model, state, path)
        frozen = set(state.get("frozen", []))
        for name, p in model.named_parameters():
            p.requires_grad_(name not in frozen)
        start = int(state["iteration"])
        changed = describe_changes(state.get("config") or {}, cfg.to_dict())  # allowed by engine/resume.py
        since = f"; settings changed since: {'; '.join(changed)}" if changed else ""
        log.info(f"resumed from {path} (iteration {start}){since}")
        return start
    check_stage_init(cfg)
    t = cfg.train
    if t.init is not None:
        init_path = ckpt_lib.resolve_init(t.init)
        init_ckpt = ckpt_lib.load_checkpoint(init_path)
        check_backbone_settings(init_ckpt.get("config"), cfg, init_path,
                                warn=log.info if t.stage == "backbone" else None)  # a backbone stage may change them
        report = ckpt_lib.load_for_stage(model, init_ckpt, t.stage, init_path)
        frozen = ckpt_lib.freeze_for_stage(model, t.stage, report["loaded"])
        log.info(f"stage {t.stage}: from {init_path}: {ckpt_lib.summarize_report(report)}; "
                 f"frozen {len(frozen)} parameter tensors")
    return 0


def restore_training_state(opt, found: tuple | None, *, seed: int, rank: int, world_size: int, start: int,
                           log: RunLog) -> None:
    """The optimizer, schedule, scaler and RNG states of the resumed checkpoint; a fresh run seeds
    each process differently (different dropout masks on each rank)."""
    if found is None:
        torch.manual_seed(seed + 1000 * rank)
        return
    state = found[1]
    opt.load_state_dict(state)
    rng = state.get("rng") or []
    if len(rng) == world_size:
        ckpt_lib.set_rng_state(rng[rank])
    else:
        torch.manual_seed(seed + 1000 * rank + start)
        log.info(f"the checkpoint holds RNG states of {len(rng)} processes, this run has {world_size}: reseeded")
