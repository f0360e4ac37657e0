"""The training loop (paper section 6.1), readable top to bottom.

``train(config, overrides, run_dir)`` does, in order:

1. resolve the config and save it as ``<run_dir>/config.yaml``; join torchrun's process group;
2. build the datasets and the model (:func:`from_config`, the one place that reads the config);
3. initialise for the stage (``backbone`` / ``graph`` / ``joint``, engine/checkpoint.py) or resume;
4. loop over iterations: ``accum`` micro-batches of ``batch_per_device`` clips per process, SGD
   step, lr schedule; log, checkpoint, evaluate;
5. evaluate at the end and return the final metrics.

Schedule (section 6.1): lr 0.00125 for a global batch of 8 clips, scaled linearly with the global
batch, divided by 10 for the last 10% of the iterations; optional linear warmup. Loss: one sigmoid
BCE per class for multi-label data (Charades), softmax cross-entropy otherwise.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from strg.config import DATA_KEYS, load_config, save_config
from strg.engine import checkpoint as ckpt_lib
from strg.engine import distributed as dist_lib
from strg.engine.datasets import build_dataset
from strg.engine.evaluator import (
    autocast_context,
    evaluate_model,
    forward,
    resolve_amp,
    to_device,
)
from strg.engine.resume import find_resume_point
from strg.engine.sample_keys import KeyedCollate, KeyedItems
from strg.engine.setup_checks import frozen_bn_from_scratch
from strg.errors import ConfigError, StrgError
from strg.progress import progress_bar


class TrainingDiverged(StrgError, RuntimeError):
    """The loss became NaN or infinite; the message names the iteration and the last checkpoint."""


def lr_at(iteration: int, *, lr: float, iterations: int, decay_at: float, decay: float, warmup_iters: int, warmup_factor: float) -> float:
    """Learning rate of a (0-based) iteration: step decay for the last (1 - decay_at) of the run
    (section 6.1: x0.1 for the last 10K of 100K) and an optional linear warmup."""
    factor = decay if iteration >= round(decay_at * iterations) else 1.0
    if iteration < warmup_iters:
        factor *= warmup_factor + (1.0 - warmup_factor) * iteration / warmup_iters
    return lr * factor


def from_config(cfg: dict, *, source: str = "<config>", train_set=None, val_set=None) -> dict:
    """Turn a resolved config into the explicit objects of a run: datasets, model, settings.

    ``train_set`` / ``val_set`` replace the datasets of ``data`` (tests, notebooks).
    Returns ``{"model", "train_set", "val_set", "multi_label", "num_classes", "collate_fn", "max_boxes"}``.
    """
    from strg.data.collate import make_collate
    from strg.models import build_model

    data = dict(cfg["data"])
    kind = data["kind"]
    options = {k: v for k, v in data.items() if k not in DATA_KEYS}
    if train_set is None:
        train_set = build_dataset(kind, split=data["train_split"], training=True, options=options, source=source)
    if val_set is None and cfg["eval"]["split"] is not None:
        val_set = build_dataset(kind, split=cfg["eval"]["split"], training=False, options=options, source=source)
    num_classes = len(train_set.classes)
    model_cfg = dict(cfg["model"])
    name = model_cfg.pop("name")
    wanted = model_cfg.pop("num_classes")
    if wanted is not None and wanted != num_classes:
        raise ConfigError(f"{source}: model.num_classes is {wanted} but the {kind!r} dataset has {num_classes} classes")
    model = build_model(name, num_classes=num_classes, **model_cfg)
    if model.uses_boxes and "proposals" in options and not options["proposals"]:
        raise ConfigError(f"{source}: model {name!r} uses region proposals: set data.proposals (a store made by `strg proposals extract`)")
    # boxes per frame in a batch (section 6.1: 50 for Charades, 10 for Something-Something)
    max_boxes = options.get("max_boxes") or getattr(train_set, "max_boxes", None) or train_set[0]["boxes"].shape[1]
    max_boxes = int(max_boxes) if model.uses_boxes else 0  # the I3D baseline takes no boxes
    return {
        "model": model,
        "train_set": train_set,
        "val_set": val_set,
        "multi_label": bool(train_set.multi_label),
        "num_classes": num_classes,
        "collate_fn": make_collate(max_boxes),
        "max_boxes": max_boxes,
    }


class RunLog:
    """Rank-0 logging: terminal (through tqdm), ``log.txt``, ``metrics.jsonl``, TensorBoard."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool):
        self.enabled, self.run_dir, self.tb = enabled, run_dir, None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def info(self, text: str) -> None:
        if self.enabled:
            tqdm.write(text)
            with open(self.run_dir / "log.txt", "a") as f:
                f.write(text + "\n")

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


def _changed_keys(old: dict, new: dict) -> list[str]:
    """Dotted keys whose values differ between two resolved configs."""
    keys = []
    for section in new:
        for key in new[section]:
            before = (old.get(section) or {}).get(key, "<unset>")
            after = new[section][key]
            if (list(before) if isinstance(before, tuple) else before) != (list(after) if isinstance(after, tuple) else after):
                keys.append(f"{section}.{key}")
    return keys


# Settings that change what the backbone computes without changing its weights' names or shapes,
# so that loading cannot catch a difference: stages ``graph`` and ``joint`` (section 6.1) and an
# evaluation must keep them, or the I3D they carry over sees other inputs than it was trained on
# (e.g. a Kinetics checkpoint's pool2 kernel 2 and 0.45 / 0.225 normalisation set for the
# ``backbone`` stage only). A ``backbone`` stage fine-tuning from a run may change them on purpose:
# it is told, not refused.
_BACKBONE_SETTINGS = (("model", "pool2_kernel"), ("model", "temporal_strides"), ("data", "mean"), ("data", "std"))


def _check_backbone_settings(init_cfg: dict | None, cfg: dict, init_path, source: str, what: str = "train.init",
                             warn=None) -> None:
    """ConfigError when the checkpoint's run set a key of _BACKBONE_SETTINGS differently (with
    ``warn``, a function of one string, that is called instead)."""
    if not init_cfg:
        return  # not a strg run's checkpoint: nothing to compare with
    differ = []
    for section, key in _BACKBONE_SETTINGS:
        old, new = (init_cfg.get(section) or {}), cfg.get(section) or {}
        if key in old and key in new and _changed_keys({section: {key: old[key]}}, {section: {key: new[key]}}):
            differ.append(f"{section}.{key}: {old[key]!r} there, {new[key]!r} here")
    if differ and warn is not None:
        warn(f"{what} {init_path} was trained with other backbone settings ({'; '.join(differ)}): this run changes them")
    elif differ:
        raise ConfigError(
            f"{source}: {what} {init_path} was trained with other backbone settings ({'; '.join(differ)}); "
            "set them as in that run (the weights would load but compute something else)"
        )


def default_run_dir(config) -> Path:
    stem = Path(config).stem if isinstance(config, (str, os.PathLike)) else "run"
    return Path("runs") / stem


def train(
    config: str | os.PathLike | dict,
    overrides: list[str] | tuple[str, ...] = (),
    run_dir: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    allow_config_change: bool = False,
    train_set=None,
    val_set=None,
) -> dict:
    """Train a model from a config (a YAML path or a dict) with ``section.key=value`` overrides.

    Args:
        run_dir: the run folder (default ``runs/<config name>``): config.yaml, log.txt,
            metrics.jsonl, tensorboard/, checkpoints/, predictions_<split>.txt.
        resume: continue from the newest readable checkpoint of ``run_dir``; refused when it would
            train nothing or when settings changed (engine/resume.py).
        allow_config_change: with ``resume``, continue with changed settings (they are logged).
        train_set, val_set: datasets to use instead of those of the config's ``data`` section.

    Returns:
        The final metrics: ``iteration``, ``train_loss``, the evaluation metrics (``mAP``/``wAP``
        or ``top1``/``top5``) unless ``eval.split`` is null, ``checkpoint`` and ``run_dir``.
    """
    source = str(config) if not isinstance(config, dict) else "<config>"
    cfg = load_config(config, overrides)
    t, ev = cfg["train"], cfg["eval"]
    if t["init_2d"] is not None and (cfg["model"].get("backbone_checkpoint") or cfg["model"].get("inflate_from")):
        raise ConfigError(
            f"{source}: train.init_2d would overwrite the backbone weights of model.backbone_checkpoint / "
            f"model.inflate_from; set train.init_2d: null"
        )
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config)
    info = dist_lib.setup(t["device"])
    per_step = t["batch_per_device"] * info.world_size
    if t["batch_size"] % per_step:
        raise ConfigError(
            f"{source}: train.batch_size {t['batch_size']} is not a multiple of train.batch_per_device "
            f"{t['batch_per_device']} x {info.world_size} processes"
        )
    accum = t["batch_size"] // per_step  # gradient accumulation steps per iteration
    existing = ckpt_lib.list_checkpoints(run_dir)
    if existing and not resume:
        raise ConfigError(
            f"{run_dir} already holds checkpoints (newest {existing[-1][1].name}); pass --resume "
            "(resume=True) to continue that run, or choose another run folder"
        )
    # resume: refused (nothing written) when it would train nothing or change settings (engine/resume.py)
    point = find_resume_point(run_dir, cfg, allow_config_change=allow_config_change, source=source) if resume else None
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if point is None or point.rewrite_config or not (run_dir / "config.yaml").is_file():
            save_config(cfg, run_dir / "config.yaml")
        for stale in (run_dir / "checkpoints").glob("*.tmp*"):  # left by a process killed mid-write
            stale.unlink()
    dist_lib.barrier(info)
    log = RunLog(run_dir, info.is_main, t["tensorboard"])

    # ---- data and model -------------------------------------------------------------------
    torch.manual_seed(t["seed"])  # the same initial weights on every rank
    built = from_config(cfg, source=source, train_set=train_set, val_set=val_set)
    model, train_set, val_set = built["model"], built["train_set"], built["val_set"]
    multi_label, collate_fn = built["multi_label"], built["collate_fn"]
    loss_kind = t["loss"] if t["loss"] != "auto" else ("bce" if multi_label else "ce")
    device = info.device
    amp = resolve_amp(t["amp"], device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed training clip size: let cuDNN pick the fastest convs

    # ---- stage-wise initialisation (section 6.1) or resume ------------------------------------
    start, state = 0, None
    if resume:
        if point is None:
            log.info(f"no readable checkpoint in {run_dir / 'checkpoints'}: starting from iteration 0")
        else:
            for note in point.notes:
                log.info(note)
            path, state, start = point.path, point.state, point.iteration
            ckpt_lib.load_model_state(model, state, path)
            for name, p in model.named_parameters():
                p.requires_grad_(name not in set(state.get("frozen", [])))
            changed = f"; settings changed since: {'; '.join(point.changed)}" if point.changed else ""
            log.info(f"resumed from {path} (iteration {start}){changed}")
    if state is None:
        if t["stage"] in ("graph", "joint") and t["init"] is None:
            raise ConfigError(f"{source}: train.init is required for stage {t['stage']!r}: the checkpoint (or run folder) of the previous stage")
        if t["init"] is not None:
            init_path = ckpt_lib.resolve_init(t["init"])
            init_ckpt = ckpt_lib.load_checkpoint(init_path)
            _check_backbone_settings(init_ckpt.get("config"), cfg, init_path, source,
                                     warn=log.info if t["stage"] == "backbone" else None)
            report = ckpt_lib.load_for_stage(model, init_ckpt, t["stage"], init_path)
            frozen = ckpt_lib.freeze_for_stage(model, t["stage"], report["loaded"])
            log.info(f"stage {t['stage']}: from {init_path}: {ckpt_lib.summarize_report(report)}; frozen {len(frozen)} parameter tensors")
        elif t["init_2d"] is not None:
            from strg.models.weights import inflate_resnet2d, load_resnet2d_state_dict

            depth = 101 if "r101" in cfg["model"]["name"] else 50
            report = inflate_resnet2d(model.backbone, load_resnet2d_state_dict(t["init_2d"], depth=depth), source=str(t["init_2d"]))
            log.info(f"backbone from {t['init_2d']}: {report.summary()}")
    if state is None and (warning := frozen_bn_from_scratch(cfg)):
        log.info(warning)
    frozen_names = [n for n, p in model.named_parameters() if not p.requires_grad]

    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if info.enabled:
        # BatchNorm is frozen (section 6.1): its buffers never change, nothing to broadcast
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
    bare = ckpt_lib.unwrap(model)

    # ---- optimizer and schedule (section 6.1) --------------------------------------------------
    lr = t["base_lr"] * t["batch_size"] / t["base_batch"]  # linear scaling with the global batch
    schedule = dict(lr=lr, iterations=t["iterations"], decay_at=t["lr_decay_at"], decay=t["lr_decay"],
                    warmup_iters=t["warmup_iters"], warmup_factor=t["warmup_factor"])
    optimizer = torch.optim.SGD(params, lr=lr, momentum=t["momentum"], weight_decay=t["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_at(i, **schedule) / lr)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        rng = state.get("rng") or []
        if len(rng) == info.world_size:
            ckpt_lib.set_rng_state(rng[info.rank])
        else:
            torch.manual_seed(t["seed"] + 1000 * info.rank + start)
            log.info(f"the checkpoint holds RNG states of {len(rng)} processes, this run has {info.world_size}: reseeded")
    else:
        torch.manual_seed(t["seed"] + 1000 * info.rank)  # different dropout masks on each rank
    log.info(
        f"{bare.variant if hasattr(bare, 'variant') else type(bare).__name__}: {len(train_set)} training clips, "
        f"{built['num_classes']} classes, loss {loss_kind}; {info.world_size} process(es) on {device}, amp {amp}; "
        f"global batch {t['batch_size']} = {t['batch_per_device']} x {info.world_size} x {accum} accumulation; lr {lr:g}"
    )

    def save(iteration: int, rng_states: list) -> Path:
        path = ckpt_lib.checkpoint_path(run_dir, iteration)
        ckpt_lib.save_checkpoint(path, {
            "iteration": iteration, "variant": getattr(bare, "variant", None), "num_classes": built["num_classes"],
            "stage": t["stage"], "frozen": frozen_names, "model": bare.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "rng": rng_states, "config": cfg,
        })
        ckpt_lib.prune_checkpoints(run_dir, t["keep_checkpoints"])
        return path

    def run_eval(iteration: int) -> dict:
        metrics = evaluate_model(  # the bare model: ranks may see different numbers of batches
            bare, val_set, collate_fn=collate_fn, info=info, multi_label=multi_label,
            batch_size=ev["batch_per_device"], num_workers=ev["num_workers"], combine=ev["combine"],
            scores=ev["scores"], amp=amp, max_videos=ev["max_videos"], progress=t["progress"],
            predictions_path=run_dir / f"predictions_{ev['split']}.txt",
        )
        log.scalars(iteration, metrics, ev["split"])
        shown = ", ".join(f"{k} {100 * v:.2f}" for k, v in metrics.items() if k in ("mAP", "wAP", "top1", "top5"))
        log.info(f"iteration {iteration}: {ev['split']} {shown} ({metrics['num_videos']} videos, {metrics['num_clips']} clips)")
        return metrics

    # ---- stage graph on small data: the frozen backbone's output computed once ---------------
    train_data, train_collate, train_workers = train_set, collate_fn, t["num_workers"]
    if t["cache_features"]:
        if t["stage"] != "graph":
            raise ConfigError(f"{source}: train.cache_features needs stage 'graph' (a frozen backbone), not {t['stage']!r}")
        if any(p.requires_grad for p in bare.backbone.parameters()):
            raise ConfigError(f"{source}: train.cache_features: the backbone has trainable parameters, so its output "
                              "changes during training; stage graph freezes the backbone weights that train.init loads")
        if info.enabled:
            raise ConfigError(f"{source}: train.cache_features runs in one process; launch without torchrun")
        from strg.engine.feature_cache import build_feature_cache, collate_features

        # what shapes the backbone's output besides its weights (hashed separately): not the head's
        # settings, so that every graph head on the same I3D shares one cache
        head_only = {"name", "num_classes", "dim", "gcn_layers", "sim_per_layer", "dropout", "compile_graph_head", "roi_impl"}
        backbone_settings = {k: v for k, v in cfg["model"].items() if k not in head_only}

        train_data = build_feature_cache(
            bare, train_set, collate_fn=collate_fn, device=device, amp=amp, batch_size=ev["batch_per_device"],
            num_workers=t["num_workers"], settings={"model": backbone_settings, "data": cfg["data"], "max_boxes": built["max_boxes"]},
            cache_dir=t["cache_dir"], progress=t["progress"] and info.is_main, log=log, source=source,
        )
        train_collate, train_workers = collate_features, 0  # in memory: workers would only copy it

    def batches(first: int, stop: int):
        """Micro-batches for iterations [first, stop). A fresh loader (and worker seeds drawn from
        a generator seeded by the iteration) per segment between checkpoints, so a resumed run
        sees the same data and augmentation as an uninterrupted one."""
        sampler = dist_lib.IterationBatchSampler(
            len(train_data), global_batch=t["batch_size"], batch_per_device=t["batch_per_device"],
            rank=info.rank, world_size=info.world_size, seed=t["seed"], start=first, stop=stop, with_positions=True,
        )
        gen = torch.Generator().manual_seed(t["seed"] * 1_000_003 + first * 101 + info.rank)
        # augmentation and dropout keyed to the sample's stream position (engine/sample_keys.py)
        loader = DataLoader(KeyedItems(train_data, t["seed"]), batch_sampler=sampler, num_workers=train_workers,
                            collate_fn=KeyedCollate(train_collate), pin_memory=device.type == "cuda", generator=gen,
                            persistent_workers=False)
        return iter(loader)

    # Modules with every parameter frozen (the I3D part in stage `graph`) stay in eval mode, so
    # that non-frozen BatchNorm does not update their statistics: "we fix the I3D features" (6.1).
    fixed = [m for m in (bare.backbone, getattr(bare, "reduce", None)) if m is not None and not any(p.requires_grad for p in m.parameters())]

    def train_mode() -> None:
        model.train()
        for m in fixed:
            m.eval()

    # ---- the loop -----------------------------------------------------------------------------
    train_mode()
    done = start  # iterations completed
    rng_snapshot = ckpt_lib.get_rng_state()  # RNG state at the start of iteration `done`
    last_ckpt = ckpt_lib.list_checkpoints(run_dir)[-1][1] if ckpt_lib.list_checkpoints(run_dir) else None
    period = t["checkpoint_period"]
    window_loss, window_n, window_t0, window_it0, skipped = 0.0, 0, time.time(), start, 0
    last_loss = float("nan")
    metrics: dict = {}
    bar = progress_bar(total=t["iterations"], initial=start, desc="train", disable=not (t["progress"] and info.is_main), dynamic_ncols=True)
    try:
        while done < t["iterations"]:
            segment_end = min(t["iterations"], (done // period + 1) * period)
            if ev["split"] is not None and t["eval_period"]:
                segment_end = min(segment_end, (done // t["eval_period"] + 1) * t["eval_period"])
            stream = batches(done, segment_end)
            for it in range(done, segment_end):
                loss_sum = torch.zeros((), device=device)
                for a in range(accum):
                    batch = next(stream)
                    skipped += batch.get("num_skipped", 0)
                    sync = a == accum - 1 or not info.enabled
                    with (nullcontext() if sync else model.no_sync()):
                        if "clips" not in batch and "features" not in batch:  # every item of this micro-batch was skipped
                            if info.enabled:  # no forward: DDP would skip this rank's all-reduce
                                raise StrgError(
                                    f"iteration {it + 1}: every item of a micro-batch was skipped; under DDP that "
                                    "desynchronises the processes. strg's datasets replace bad videos in training; "
                                    "a custom dataset must not return None while training"
                                )
                            loss = sum(p.sum() for p in params) * 0.0  # one process: a no-op step
                        else:
                            batch = to_device(batch, device)
                            with autocast_context(device, amp):
                                logits = forward(model, batch, bare.uses_boxes)  # (b, C)
                            logits = logits.float()
                            if loss_kind == "bce":  # section 6.1: one sigmoid per class (Charades)
                                loss = F.binary_cross_entropy_with_logits(logits, batch["targets"].float())
                            else:  # softmax cross-entropy (Something-Something)
                                loss = F.cross_entropy(logits, batch["targets"])
                        scaler.scale(loss / accum).backward()
                    loss_sum += loss.detach() / accum
                loss_value = float(dist_lib.all_reduce_mean(loss_sum, info))  # one sync per iteration
                if not math.isfinite(loss_value):
                    raise TrainingDiverged(
                        f"the loss is {loss_value} at iteration {it + 1}; stopped without updating the weights. "
                        f"Last good checkpoint: {last_ckpt or 'none written yet'}. Lower train.base_lr, add "
                        f"train.warmup_iters or train.grad_clip, or use train.amp=bf16 instead of fp16"
                    )
                if t["grad_clip"] is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, t["grad_clip"])
                lr_used = optimizer.param_groups[0]["lr"]
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                with warnings.catch_warnings():  # fp16: the scaler skips steps with inf gradients; expected
                    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                    scheduler.step()
                done = it + 1
                rng_snapshot = ckpt_lib.get_rng_state()
                last_loss = loss_value
                window_loss += loss_value
                window_n += 1
                bar.update(1)

                if done % t["log_period"] == 0 or done == t["iterations"]:
                    elapsed = max(time.time() - window_t0, 1e-9)
                    record = {"loss": window_loss / window_n, "lr": lr_used,
                              "clips_per_s": (done - window_it0) * t["batch_size"] / elapsed}
                    if device.type == "cuda":
                        record["max_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
                    if skipped:
                        record["skipped"] = skipped
                    log.scalars(done, record, "train")
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.3g}", clips_s=f"{record['clips_per_s']:.1f}")
                    window_loss, window_n, window_t0, window_it0 = 0.0, 0, time.time(), done
                if done % period == 0 or done == t["iterations"]:
                    rng_states = dist_lib.all_gather_objects(rng_snapshot, info)
                    if info.is_main:
                        last_ckpt = save(done, rng_states)
                if ev["split"] is not None and t["eval_period"] and done % t["eval_period"] == 0 and done != t["iterations"]:
                    metrics = run_eval(done)
                    train_mode()
    except KeyboardInterrupt:
        bar.close()
        if info.is_main and done > start:
            # Ctrl-C: keep what was trained (weights after `done` iterations, RNG at that point).
            path = save(done, [rng_snapshot])
            log.info(f"interrupted at iteration {done}: checkpoint {path}; continue with --resume")
        raise
    bar.close()
    if skipped:
        log.info(f"{skipped} training samples were skipped (unreadable; see the data warnings)")
    if ev["split"] is not None and val_set is not None:
        metrics = run_eval(done)
    log.close()
    # no iteration trained in this call (cannot happen through resume, which refuses): no loss to report
    return {"iteration": done, "train_loss": last_loss if done > start else None, **metrics, "checkpoint": str(last_ckpt) if last_ckpt else None, "run_dir": str(run_dir)}


def evaluate(
    config: str | os.PathLike | dict,
    checkpoint: str | os.PathLike | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    run_dir: str | os.PathLike | None = None,
    *,
    split: str | None = None,
    val_set=None,
    predictions: str | os.PathLike | None = None,
) -> dict:
    """Evaluate a checkpoint: multi-clip scores, metrics, and a Charades-format predictions file.

    Args:
        config: the run's config (e.g. ``<run>/config.yaml``); ``checkpoint``: a checkpoint file
            or a run folder (its newest checkpoint); None evaluates the config's model as built.
        split: overrides ``eval.split``. ``predictions``: the predictions file (default
            ``<run_dir>/predictions_<split>.txt`` when run_dir is given).
    """
    overrides = list(overrides) + ([f"eval.split={split}"] if split is not None else [])
    cfg = load_config(config, overrides)
    source = str(config) if not isinstance(config, dict) else "<config>"
    ev, t = cfg["eval"], cfg["train"]
    if ev["split"] is None:
        raise ConfigError("eval.split is null: nothing to evaluate")
    info = dist_lib.setup(t["device"])
    data = cfg["data"]
    if val_set is None:
        options = {k: v for k, v in data.items() if k not in DATA_KEYS}
        val_set = build_dataset(data["kind"], split=ev["split"], training=False, options=options)
    built = from_config(cfg, source=source, train_set=val_set, val_set=val_set)
    model = built["model"]
    if checkpoint is not None:
        path = ckpt_lib.resolve_init(checkpoint)
        ckpt = ckpt_lib.load_checkpoint(path)
        _check_backbone_settings(ckpt.get("config"), cfg, path, source, what="the checkpoint")
        ckpt_lib.load_model_state(model, ckpt, path)
    model.to(info.device)
    if predictions is None and run_dir is not None:
        predictions = Path(run_dir) / f"predictions_{ev['split']}.txt"
    return evaluate_model(
        model, val_set, collate_fn=built["collate_fn"], info=info, multi_label=built["multi_label"],
        batch_size=ev["batch_per_device"], num_workers=ev["num_workers"], combine=ev["combine"],
        scores=ev["scores"], amp=resolve_amp(t["amp"], info.device), max_videos=ev["max_videos"],
        progress=t["progress"], predictions_path=predictions,
    )


__all__ = ["train", "evaluate", "from_config", "lr_at", "TrainingDiverged"]
