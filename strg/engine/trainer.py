"""The training loop (paper section 6.1), read top to bottom in :func:`train`.

``train(config, overrides, run_dir)``:

1. resolve the config (:mod:`strg.config`), save it as ``<run_dir>/config.yaml``, join torchrun's
   process group;
2. **build** the datasets and the model (:mod:`strg.engine.build`);
3. **restore**: resume from the run's own checkpoint, or initialise for the stage ``backbone`` /
   ``graph`` / ``joint`` from the previous one (:mod:`strg.engine.restore`);
4. loop over iterations: **step** (:mod:`strg.engine.step`: ``accum`` micro-batches per process,
   SGD with the schedule of :mod:`strg.engine.optim`), **log** (:mod:`strg.engine.run_log`),
   **checkpoint** (:class:`strg.engine.checkpoint.RunCheckpoints`; also on Ctrl-C), **evaluate**
   (:mod:`strg.engine.evaluator`) every ``train.eval_period`` iterations;
5. evaluate at the end and return the final metrics.

In stage ``graph`` with ``train.cache_features``, the frozen backbone's output is computed once
and the head trains on it (:mod:`strg.engine.feature_cache`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from strg.config import RunConfig, load_config, save_config
from strg.engine import checkpoint as ckpt_lib
from strg.engine import distributed as dist_lib
from strg.engine.backbone_source import apply_backbone_source
from strg.engine.build import RunData, build_run
from strg.engine.evaluator import evaluate_model, resolve_amp
from strg.engine.feature_cache import build_feature_cache, collate_features
from strg.engine.optim import Optimization
from strg.engine.restore import restore_training_state, restore_weights
from strg.engine.resume import find_resume_point
from strg.engine.run_log import RunLog, TrainMeter
from strg.engine.setup_checks import frozen_bn_from_scratch
from strg.engine.stage_checks import check_cache_features
from strg.engine.step import TrainStep, train_batches
from strg.errors import ConfigError
from strg.progress import progress_bar


def default_run_dir(config) -> Path:
    stem = Path(config).stem if isinstance(config, (str, os.PathLike)) else "run"
    return Path("runs") / stem


def train(
    config: str | os.PathLike | dict | RunConfig,
    overrides: list[str] | tuple[str, ...] = (),
    run_dir: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    allow_config_change: bool = False,
    train_set=None,
    val_set=None,
) -> dict:
    """Train a model from a config (a YAML path, a dict or a RunConfig) with ``section.key=value`` overrides.

    Args:
        run_dir: the run folder (default ``runs/<config name>``): config.yaml, log.txt,
            metrics.jsonl, tensorboard/, checkpoints/, predictions_<split>.txt.
        resume: continue from the newest readable checkpoint of ``run_dir``; refused when it would
            train nothing or when settings changed (:mod:`strg.engine.resume`).
        allow_config_change: with ``resume``, continue with changed settings (they are logged).
        train_set, val_set: datasets to use instead of those of the config's ``data`` section.

    Returns:
        The final metrics: ``iteration``, ``train_loss``, the evaluation metrics (``mAP``/``wAP``
        or ``top1``/``top5``) unless ``eval.split`` is null, ``checkpoint`` and ``run_dir``.
    """
    cfg = load_config(config, overrides)
    source_notes = apply_backbone_source(cfg)  # before config.yaml is written: it records the values used
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config)
    info = dist_lib.setup(cfg.train.device)
    accum = accumulation_steps(cfg, info.world_size)
    # resume: refused (nothing written) when it would train nothing or change settings
    point = find_resume_point(run_dir, cfg, allow_config_change=allow_config_change) if resume else None
    prepare_run_dir(run_dir, cfg, info, resume=resume,
                    write_config=point is None or point.rewrite_config or not (run_dir / "config.yaml").is_file())
    with RunLog(run_dir, info.is_main, cfg.train.tensorboard) as log:
        for note in source_notes + (point.notes if point else []):
            log.info(note)
        found = (point.path, point.state) if point else None
        if resume and point is None:
            log.info(f"no readable checkpoint in {run_dir / 'checkpoints'}: starting from iteration 0")
        torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
        model, data = build_run(cfg, starting_weights=found is None and cfg.train.init is None,
                                train_set=train_set, val_set=val_set)
        start = restore_weights(model, cfg, found, log)
        if found is None and (warning := frozen_bn_from_scratch(cfg)):
            log.info(warning)
        run = Run.setup(cfg, model, data, info=info, accum=accum, run_dir=run_dir, log=log, found=found, start=start)
        done, last_loss, metrics = run.loop(start)
        if run.meter.skipped:
            log.info(f"{run.meter.skipped} training samples were skipped (unreadable; see the data warnings)")
        if cfg.eval.split is not None and data.val_set is not None:
            metrics = run.evaluate(done)
    last = run.checkpoints.last
    # no iteration trained in this call (resume refuses that): no loss to report, not NaN
    return {"iteration": done, "train_loss": last_loss if done > start else None, **metrics,
            "checkpoint": str(last) if last else None, "run_dir": str(run_dir)}


def accumulation_steps(cfg: RunConfig, world_size: int) -> int:
    """Micro-batches per process and iteration: the global batch over (clips per pass x processes)."""
    t = cfg.train
    per_step = t.batch_per_device * world_size
    if t.batch_size % per_step:
        raise ConfigError(
            f"{cfg.source}: train.batch_size {t.batch_size} is not a multiple of train.batch_per_device "
            f"{t.batch_per_device} x {world_size} processes"
        )
    return t.batch_size // per_step


def prepare_run_dir(run_dir: Path, cfg: RunConfig, info, *, resume: bool, write_config: bool = True) -> None:
    """Refuse a folder with checkpoints unless resuming; rank 0 writes config.yaml (when
    ``write_config``) and removes files left by a process killed mid-write."""
    existing = ckpt_lib.list_checkpoints(run_dir)
    if existing and not resume:
        raise ConfigError(
            f"{run_dir} already holds checkpoints (newest {existing[-1][1].name}); pass --resume "
            "(resume=True) to continue that run, or choose another run folder"
        )
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if write_config:
            save_config(cfg, run_dir / "config.yaml")
        for stale in (run_dir / "checkpoints").glob("*.tmp*"):
            stale.unlink()
    dist_lib.barrier(info)


@dataclass
class Run:
    """The parts of a training run once built and restored, and its loop."""

    cfg: RunConfig
    model: torch.nn.Module  # DDP-wrapped under torchrun
    bare: torch.nn.Module
    data: RunData
    train_data: object  # the training set, or its cached backbone output
    info: dist_lib.DistInfo
    amp: str
    step: TrainStep
    checkpoints: ckpt_lib.RunCheckpoints
    meter: TrainMeter
    log: RunLog
    run_dir: Path

    @classmethod
    def setup(cls, cfg: RunConfig, model, data: RunData, *, info, accum: int, run_dir: Path, log: RunLog,
              found: tuple | None, start: int) -> "Run":
        """Move the model to the device, wrap it for DDP, make the optimizer (restored when
        resuming) and, with ``train.cache_features``, the cached training data."""
        t, device = cfg.train, info.device
        amp = resolve_amp(t.amp, device)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed training clip size: let cuDNN pick the fastest convs
        frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
        model.to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        bare, wrapped = model, model
        if info.enabled:  # BatchNorm is frozen (section 6.1): its buffers never change, nothing to broadcast
            wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                              broadcast_buffers=False)
        opt = Optimization(params, t, fp16=amp == "fp16", device_type=device.type)
        restore_training_state(opt, found, seed=t.seed, rank=info.rank, world_size=info.world_size, start=start,
                               log=log)
        loss = t.loss if t.loss != "auto" else ("bce" if data.multi_label else "ce")
        log.info(
            f"{getattr(bare, 'variant', type(bare).__name__)}: {len(data.train_set)} training clips, "
            f"{data.num_classes} classes, loss {loss}; {info.world_size} process(es) on {device}, amp {amp}; "
            f"global batch {t.batch_size} = {t.batch_per_device} x {info.world_size} x {accum} accumulation; "
            f"lr {opt.lr:g}"
        )
        meta = {"variant": getattr(bare, "variant", None), "num_classes": data.num_classes, "stage": t.stage,
                "frozen": frozen, "config": cfg.to_dict(),
                # what `strg predict` needs besides the config, without the dataset's annotation files
                "classes": list(data.train_set.classes), "multi_label": bool(data.multi_label)}
        train_data = _training_data(cfg, bare, data, info, amp, log)
        return cls(cfg=cfg, model=wrapped, bare=bare, data=data, train_data=train_data, info=info, amp=amp,
                   step=TrainStep(wrapped, bare, opt, accum=accum, loss=loss, amp=amp, info=info,
                                  box_jitter=t.box_jitter, box_drop=t.box_drop),
                   checkpoints=ckpt_lib.RunCheckpoints(run_dir, bare, opt, info=info, keep=t.keep_checkpoints,
                                                       meta=meta),
                   meter=TrainMeter(log, start=start, batch_size=t.batch_size, device=device), log=log, run_dir=run_dir)

    def loop(self, start: int) -> tuple[int, float, dict]:
        """Iterations ``start`` .. ``train.iterations``, in segments that end at a checkpoint or an
        evaluation. Returns (iterations done, last loss, metrics of the last evaluation)."""
        t, ev = self.cfg.train, self.cfg.eval
        done, last_loss, metrics = start, float("nan"), {}
        rng_snapshot = ckpt_lib.get_rng_state()  # RNG state at the start of iteration `done`
        bar = progress_bar(total=t.iterations, initial=start, desc="train",
                           disable=not (t.progress and self.info.is_main), dynamic_ncols=True)
        self.step.train_mode()
        try:
            while done < t.iterations:
                end = self._segment_end(done)
                stream = self._batches(done, end)
                for it in range(done, end):
                    last_loss, lr, skipped = self.step(stream, it, self.checkpoints.last)
                    done, rng_snapshot = it + 1, ckpt_lib.get_rng_state()
                    bar.update(1)
                    self.meter.add(last_loss, skipped)
                    if done % t.log_period == 0 or done == t.iterations:
                        record = self.meter.write(done, lr)
                        bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.3g}",
                                        clips_s=f"{record['clips_per_s']:.1f}")
                    if done % t.checkpoint_period == 0 or done == t.iterations:
                        self.checkpoints.periodic(done, rng_snapshot, dist_lib.all_gather_objects)
                    if ev.split is not None and t.eval_period and done % t.eval_period == 0 and done != t.iterations:
                        metrics = self.evaluate(done)
                        self.step.train_mode()
        except KeyboardInterrupt:
            bar.close()
            self.checkpoints.interrupted(done, start, rng_snapshot, self.log)
            raise
        bar.close()
        return done, last_loss, metrics

    def _segment_end(self, done: int) -> int:
        """The next checkpoint or evaluation after iteration ``done`` (a fresh data loader each)."""
        t = self.cfg.train
        end = min(t.iterations, (done // t.checkpoint_period + 1) * t.checkpoint_period)
        if self.cfg.eval.split is not None and t.eval_period:
            end = min(end, (done // t.eval_period + 1) * t.eval_period)
        return end

    def _batches(self, first: int, stop: int):
        t, cached = self.cfg.train, self.train_data is not self.data.train_set
        return train_batches(self.train_data, first=first, stop=stop, global_batch=t.batch_size,
                             batch_per_device=t.batch_per_device, seed=t.seed, info=self.info,
                             num_workers=0 if cached else t.num_workers,  # in memory: workers would only copy it
                             collate_fn=collate_features if cached else self.data.collate_fn)

    def evaluate(self, iteration: int) -> dict:
        """Evaluate on ``eval.split``, log the metrics and write the predictions file."""
        ev = self.cfg.eval
        metrics = evaluate_model(  # the bare model: ranks may see different numbers of batches
            self.bare, self.data.val_set, collate_fn=self.data.collate_fn, info=self.info,
            multi_label=self.data.multi_label, batch_size=ev.batch_per_device, num_workers=ev.num_workers,
            combine=ev.combine, scores=ev.scores, amp=self.amp, max_videos=ev.max_videos,
            progress=self.cfg.train.progress, predictions_path=self.run_dir / f"predictions_{ev.split}.txt",
        )
        self.log.scalars(iteration, metrics, ev.split)
        shown = ", ".join(f"{k} {100 * v:.2f}" for k, v in metrics.items() if k in ("mAP", "wAP", "top1", "top5"))
        self.log.info(f"iteration {iteration}: {ev.split} {shown} "
                      f"({metrics['num_videos']} videos, {metrics['num_clips']} clips)")
        return metrics


# the model settings that do not shape the backbone's output: left out of the feature cache's key,
# so that every graph head on the same I3D shares one cache
_HEAD_SETTINGS = {"name", "num_classes", "dim", "gcn_layers", "sim_per_layer", "dropout", "compile_graph_head",
                  "roi_impl", "box_geometry"}


def _training_data(cfg: RunConfig, bare, data: RunData, info, amp: str, log: RunLog):
    """The training set, or with ``train.cache_features`` the frozen backbone's output on it."""
    t = cfg.train
    if not t.cache_features:
        return data.train_set
    check_cache_features(cfg, bare.backbone, info.enabled)
    plain = cfg.to_dict()
    settings = {"model": {k: v for k, v in plain["model"].items() if k not in _HEAD_SETTINGS}, "data": plain["data"],
                "max_boxes": data.max_boxes}
    return build_feature_cache(
        bare, data.train_set, collate_fn=data.collate_fn, device=info.device, amp=amp,
        batch_size=cfg.eval.batch_per_device, num_workers=t.num_workers, settings=settings, cache_dir=t.cache_dir,
        progress=t.progress and info.is_main, log=log, source=cfg.source,
    )


__all__ = ["train", "default_run_dir"]
