"""``strg demo``: the paper's Table 2a in miniature, on synthetic data, on the CPU.

Generates (or reuses) a synthetic relational-action dataset (:mod:`strg.synth`), then trains and
evaluates the I3D baseline and the four region variants of Table 2a through the same engine as
``strg train`` / ``strg eval`` (:func:`strg.engine.train`), with a small I3D built by the same
backbone code (``width``, ``stage_blocks``, ``dim`` of ``build_model``). Stage-wise as in
section 6.1: the I3D baseline is trained first (stage ``backbone``); each region variant starts
from it with the I3D frozen (stage ``graph``), then, when the preset has joint iterations,
trains end to end (stage ``joint``, 0.1x the learning rate); the I3D row is then the I3D
fine-tuned with the same joint schedule (run ``i3d_joint``), so every backbone gets as many
updates.

Everything that differs from the paper's configs is a config value in :data:`PRESETS` (sizes,
iterations, learning rate, BatchNorm): nothing else is demo-only. The report folder holds the
table (markdown + JSON), PNGs of the learning curves and of the per-class accuracies, and each
run's folder (config.yaml, metrics.jsonl, log.txt, predictions, checkpoints).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from strg.errors import ConfigError

#: Table 2a rows: (variant head, label as in the paper)
ROWS = (("i3d", "I3D (baseline)"), ("proposal_avgpool", "Proposal + AvgPool"), ("st_gcn", "ST-GCN"),
        ("sim_gcn", "Sim-GCN"), ("joint_gcn", "Joint GCN"))


@dataclass(frozen=True)
class Preset:
    """Sizes and schedule of a demo run (every field ends up in the runs' configs)."""

    num_videos: int
    frames: int
    size: int
    width: int  # res2 bottleneck width of the I3D (64 in the paper)
    stage_blocks: tuple[int, int, int, int]
    dim: int  # d of the region features (512 in the paper)
    gcn_layers: int
    max_boxes: int  # proposals per frame (paper: 10 for Something-Something)
    backbone_iters: int
    graph_iters: int
    joint_iters: int
    batch_size: int
    base_lr: float
    num_workers: int


PRESETS = {
    # dim: the paper reduces 2048 -> 512 (4x); the demo's res5 has 32 * width = 256 channels -> 64
    "default": Preset(num_videos=3000, frames=16, size=64, width=8, stage_blocks=(1, 1, 1, 1), dim=64,
                      gcn_layers=3, max_boxes=8, backbone_iters=1700, graph_iters=2000, joint_iters=0,
                      batch_size=16, base_lr=0.02, num_workers=1),
    "quick": Preset(num_videos=300, frames=16, size=48, width=4, stage_blocks=(1, 1, 1, 1), dim=16,
                    gcn_layers=2, max_boxes=6, backbone_iters=40, graph_iters=15, joint_iters=10,
                    batch_size=8, base_lr=0.01, num_workers=0),
}


def run_config(preset: Preset, head: str, *, data_root: str, variant: str, seed: int, stage: str,
               init: str | None, iterations: int, lr_scale: float = 1.0, cache_dir: str | None = None) -> dict:
    """The config of one run: a plain config of the engine (docs/engine.md), small sizes.

    Stage ``graph`` on the single-label data trains on the cached output of the frozen I3D
    (``train.cache_features``, saved in ``cache_dir`` and shared by the four graph runs): the same
    training, 6.6-8.1x faster per iteration (docs/demo.md), so the heads get enough iterations in
    the time budget. The Charades variant samples its clips at random times of longer videos, so it cannot cache.
    """
    multi = variant == "charades"
    data = {
        "kind": "charades" if multi else "something_v2",
        "root": data_root,
        "proposals": os.path.join(data_root, "proposals.sqlite"),
        "num_frames": preset.frames,
        "stride": 1.0, "stride_unit": "frames",
        # the frames are already small: no rescaling, the crop is the full frame
        "train_short_side": [preset.size, preset.size], "crop_size": preset.size,
        "test_short_side": preset.size, "test_clips": 1 if not multi else 3,
        "max_boxes": preset.max_boxes,
        "flip": False,  # "left to right" classes: no flip without a label map (docs/formats.md)
    }
    return {
        "model": {"name": f"{head}_r50", "width": preset.width, "stage_blocks": list(preset.stage_blocks),
                  "dim": preset.dim, "gcn_layers": preset.gcn_layers,
                  # Trained from scratch, so BatchNorm must learn its statistics; the paper freezes
                  # it because it fine-tunes an ImageNet/Kinetics-initialised I3D (section 6.1).
                  "frozen_bn": False},
        "data": data,
        "train": {"stage": stage, "init": init, "iterations": iterations, "batch_size": preset.batch_size,
                  "batch_per_device": preset.batch_size, "base_lr": preset.base_lr * lr_scale,
                  "base_batch": preset.batch_size, "warmup_iters": max(1, iterations // 20),
                  "lr_decay_at": 0.75, "device": "cpu", "seed": seed, "checkpoint_period": 100000,
                  "keep_checkpoints": 1, "log_period": max(1, iterations // 20), "num_workers": preset.num_workers,
                  "tensorboard": False, "cache_features": stage == "graph" and not multi,
                  "cache_dir": cache_dir if stage == "graph" and not multi else None},
        "eval": {"split": "val", "combine": "max", "batch_per_device": 32, "num_workers": preset.num_workers},
    }


def _plan(preset: Preset) -> list[dict]:
    """The runs in order: (name, head, stage, init run, iterations).

    Section 6.1: the I3D first (stage ``backbone``); each region variant from it with the I3D
    frozen (stage ``graph``), then, when ``joint_iters`` > 0, end to end (stage ``joint``, lr x 0.1). So that every row's
    backbone gets the same number of updates, the I3D row is fine-tuned for the same ``joint``
    iterations with the same schedule (``i3d_joint``)."""
    runs = [{"name": "i3d", "head": "i3d", "stage": "backbone", "init": None, "iters": preset.backbone_iters}]
    if preset.joint_iters:
        runs.append({"name": "i3d_joint", "head": "i3d", "stage": "joint", "init": "i3d", "iters": preset.joint_iters})
    for head, _ in ROWS[1:]:
        runs.append({"name": f"{head}_graph", "head": head, "stage": "graph", "init": "i3d",
                     "iters": preset.graph_iters})
        if preset.joint_iters:
            runs.append({"name": head, "head": head, "stage": "joint", "init": f"{head}_graph",
                         "iters": preset.joint_iters})
    return runs


def _row_run(head: str, preset: Preset) -> str:
    """The run whose metrics are the table's row for ``head``."""
    if head == "i3d":
        return "i3d_joint" if preset.joint_iters else "i3d"
    return head if preset.joint_iters else f"{head}_graph"


def _rate_key(run: dict) -> tuple[str, bool]:
    return run["stage"], run["head"] == "i3d"


def _guess_rate(rate: dict, run: dict) -> float:
    """Seconds per iteration of ``run``: measured, else the same stage with the other head, else
    the backbone stage's (x 0.6 for stage ``graph``, whose frozen I3D needs no backward)."""
    stage, i3d = _rate_key(run)
    if (stage, i3d) in rate:
        return rate[(stage, i3d)]
    if (stage, not i3d) in rate:
        return rate[(stage, not i3d)]
    if stage != "graph":
        return rate.get(("backbone", True), 0.0)
    # the frozen I3D needs no backward; on cached features it does not run at all (measured on
    # the default preset: about 0.1 of a backbone iteration)
    return rate.get(("backbone", True), 0.0) * (0.1 if run.get("cached") else 0.6)


def _fmt_time(s: float) -> str:
    s = round(s)
    return f"{s // 60}:{s % 60:02d}"


def run_demo(out_dir: str | os.PathLike = "strg-demo", *, quick: bool = False, seed: int = 0,
             variant: str = "something", data_dir: str | os.PathLike | None = None,
             progress: bool = True, overrides: dict | None = None) -> dict:
    """Generate data if needed, train and evaluate the five Table 2a variants, write the report.

    Args:
        out_dir: report folder (``report.md``, ``results.json``, ``curves.png``, ``runs/<name>/``).
            Runs already in it are redone (the folder of each run is replaced).
        quick: the small preset (CI smoke test, about 20 s on 2 quiet cores).
        data_dir: where the synthetic data goes (default ``<out_dir>/data``); reused when it
            holds the same settings.
        overrides: Preset fields to change (e.g. ``{"backbone_iters": 1000}``).

    Returns:
        ``{"rows": [{"name", "label", "top1", "top5" | "mAP", ...}], "seconds", ...}``.
    """
    from strg.engine import train
    from strg.synth import generate_dataset

    preset = PRESETS["quick" if quick else "default"]
    if overrides:
        unknown = set(overrides) - set(Preset.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"demo: unknown preset keys {sorted(unknown)}; known: {sorted(Preset.__dataclass_fields__)}")
        preset = replace(preset, **overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    say = print if progress else (lambda *a, **k: None)

    frames = preset.frames if variant == "something" else preset.frames * 3
    data_root = Path(data_dir) if data_dir is not None else out / "data" / \
        f"{variant}-s{seed}-n{preset.num_videos}-f{frames}-{preset.size}px"
    say(f"strg demo: data in {data_root}")
    manifest = generate_dataset(data_root, seed=seed, num_videos=preset.num_videos, frames=frames,
                                size=preset.size, variant=variant, progress=progress)
    t_data = time.time() - t_start
    say(f"strg demo: {manifest['num_train']} training / {manifest['num_val']} validation videos, "
        f"{len(manifest['classes'])} classes ({_fmt_time(t_data)})")

    plan = _plan(preset)
    cache_dir = out / "runs" / "i3d" / "feature_cache"  # the frozen I3D's output, for the graph runs
    for run in plan:
        run["cached"] = run["stage"] == "graph" and variant != "charades"
    rate: dict[tuple[str, bool], float] = {}  # measured seconds per iteration of each stage, I3D or not
    results = {}
    runs_dir = out / "runs"
    for k, run in enumerate(plan):
        run_dir = runs_dir / run["name"]
        if run_dir.exists():
            shutil.rmtree(run_dir)
        left = ""
        if rate:  # time left from the measured speeds (per stage, I3D or region head)
            left = f", about {_fmt_time(sum(r['iters'] * _guess_rate(rate, r) for r in plan[k:]))} left"
        say(f"\n[{k + 1}/{len(plan)}] {run['name']}: stage {run['stage']}, {run['iters']} iterations"
            f"{' from ' + run['init'] if run['init'] else ''} (elapsed {_fmt_time(time.time() - t_start)}{left})")
        cfg = run_config(preset, run["head"], data_root=str(data_root), variant=variant, seed=seed,
                         stage=run["stage"], init=str(runs_dir / run["init"]) if run["init"] else None,
                         iterations=run["iters"], lr_scale=0.1 if run["stage"] == "joint" else 1.0,
                         cache_dir=str(cache_dir))
        cfg["train"]["progress"] = progress
        t0 = time.time()
        final = train(cfg, run_dir=run_dir)
        rate[_rate_key(run)] = (time.time() - t0) / max(1, run["iters"])
        results[run["name"]] = {**{k2: v for k2, v in final.items() if k2 not in ("checkpoint", "run_dir")},
                                "seconds": round(time.time() - t0, 1), "stage": run["stage"]}

    shutil.rmtree(cache_dir, ignore_errors=True)  # hundreds of MB, only needed by the graph runs
    multi = variant == "charades"
    rows = []
    for head, label in ROWS:
        name = _row_run(head, preset)
        r = results[name]
        row = {"name": head, "label": label, "run": name}
        row.update({"mAP": r["mAP"], "wAP": r["wAP"]} if multi else {"top1": r["top1"], "top5": r["top5"]})
        rows.append(row)
    per_class = None if multi else per_class_accuracy(rows, runs_dir, str(data_root))
    report = {"rows": rows, "runs": results, "per_class": per_class, "preset": asdict(preset), "variant": variant, "seed": seed,
              "data": str(data_root), "data_seconds": round(t_data, 1),
              "seconds": round(time.time() - t_start, 1)}
    table = format_table(rows, multi)
    _write(out / "results.json", json.dumps(report, indent=1) + "\n")
    plot_curves(plan, runs_dir, out / "curves.png", multi)
    if per_class is not None:
        plot_per_class(per_class, rows, out / "per_class.png")
    _write(out / "report.md", _report_md(report, table))
    say("\n" + table)
    say(f"\nreport: {out / 'report.md'} (total {_fmt_time(report['seconds'])})")
    return report


def format_table(rows: list[dict], multi_label: bool) -> str:
    """A markdown table shaped like the paper's Table 2a (percentages)."""
    if multi_label:
        lines = ["| model | mAP | wAP |", "| --- | ---: | ---: |"]
        lines += [f"| {r['label']} | {100 * r['mAP']:.1f} | {100 * r['wAP']:.1f} |" for r in rows]
    else:
        lines = ["| model | top-1 | top-5 |", "| --- | ---: | ---: |"]
        lines += [f"| {r['label']} | {100 * r['top1']:.1f} | {100 * r['top5']:.1f} |" for r in rows]
    return "\n".join(lines)


def per_class_accuracy(rows: list[dict], runs_dir: Path, data_root: str) -> dict:
    """Top-1 accuracy per class of each row's run, from its ``predictions_val.txt``.

    Returns ``{"classes": [names], "videos": [count per class], "<row name>": [percent per class]}``.
    """
    import numpy as np

    from strg.data import build_dataset
    from strg.metrics import read_submission

    val = build_dataset("something_v2", split="val", training=False, root=data_root)
    labels = np.array([rec.label for rec in val.videos])
    num = len(val.classes)
    out: dict = {"classes": list(val.classes), "videos": np.bincount(labels, minlength=num).tolist()}
    for row in rows:
        ids, scores = read_submission(runs_dir / row["run"] / "predictions_val.txt")
        predicted = dict(zip(ids, scores.argmax(1).tolist()))
        # a video missing from the predictions (it could not be read) counts as wrong, as in top-1
        hit = np.array([predicted.get(rec.video_id, -1) == rec.label for rec in val.videos])
        out[row["name"]] = [round(100.0 * float(hit[labels == c].mean()), 1) if (labels == c).any() else None
                            for c in range(num)]
    return out


def format_per_class(per_class: dict, rows: list[dict]) -> str:
    """A markdown table: one line per class, one column per Table 2a row."""
    head = "| class | videos | " + " | ".join(r["label"] for r in rows) + " |"
    lines = [head, "| --- | ---: |" + " ---: |" * len(rows)]
    for c, name in enumerate(per_class["classes"]):
        cells = ["-" if per_class[r["name"]][c] is None else f"{per_class[r['name']][c]:.0f}" for r in rows]
        lines.append(f"| {name} | {per_class['videos'][c]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_per_class(per_class: dict, rows: list[dict], path: Path) -> None:
    """Grouped horizontal bars: accuracy of each row on each class (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = per_class["classes"]
    n, k = len(classes), len(rows)
    fig, ax = plt.subplots(figsize=(8, 0.55 * n * max(1, k / 4) + 1))
    height = 0.8 / k
    for j, row in enumerate(rows):
        values = [v if v is not None else 0.0 for v in per_class[row["name"]]]
        ax.barh([i + (j - (k - 1) / 2) * height for i in range(n)], values, height=height, label=row["label"])
    ax.set_yticks(range(n))
    ax.set_yticklabels(classes, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("validation top-1 accuracy of the class (%)")
    ax.set_xlim(0, 100)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    _save_figure(fig, path)


def _report_md(report: dict, table: str) -> str:
    p = report["preset"]
    score = (lambda r: f"{100 * r['mAP']:.1f}") if report["variant"] == "charades" else (lambda r: f"{100 * r['top1']:.1f}")
    runs = "\n".join(f"| {n} | {r['stage']} | {r['iteration']} | {r['train_loss']:.3f} | {score(r)} | {r['seconds']} |"
                     for n, r in report["runs"].items())
    return (f"# strg demo ({report['variant']}, seed {report['seed']})\n\n{table}\n\n"
            f"Validation videos of the synthetic data in `{report['data']}`; small I3D (width {p['width']}, "
            f"blocks {p['stage_blocks']}, d = {p['dim']}), {p['frames']} frames of {p['size']} px, "
            f"{p['max_boxes']} proposals per frame. Region variants start from the I3D run with the I3D "
            f"frozen (stage `graph`, {p['graph_iters']} iterations, paper section 6.1)"
            + (f", then train end to end (stage `joint`, {p['joint_iters']} iterations at 0.1x the learning rate); "
               f"the I3D row is the I3D fine-tuned for the same {p['joint_iters']} iterations, so that every "
               f"backbone gets the same number of updates" if p["joint_iters"] else "")
            + ".\n\n"
            f"| run | stage | iterations | train loss (last batch) | {'mAP' if report['variant'] == 'charades' else 'top-1'} | seconds |\n"
            f"| --- | --- | ---: | ---: | ---: | ---: |\n{runs}\n\n"
            f"![learning curves](curves.png)\n\n"
            + (f"## Per class (validation top-1, %)\n\n{format_per_class(report['per_class'], report['rows'])}\n\n"
               f"![per-class accuracy](per_class.png)\n\n" if report.get("per_class") else "")
            + f"Each run's folder `runs/<run>/` holds its config.yaml, "
            f"metrics.jsonl and log.txt. Total time {_fmt_time(report['seconds'])} "
            f"(data {_fmt_time(report['data_seconds'])}).\n")


def plot_curves(plan: list[dict], runs_dir: Path, path: Path, multi_label: bool) -> None:
    """Training loss of every run against the iterations it has seen in all (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    offsets = {}
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in plan:
        offset = offsets.get(run["init"], 0) if run["init"] else 0
        offsets[run["name"]] = offset + run["iters"]
        its, loss = [], []
        with open(runs_dir / run["name"] / "metrics.jsonl", encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                if rec.get("split") == "train":
                    its.append(offset + rec["iteration"])
                    loss.append(rec["loss"])
        ax.plot(its, loss, label=f"{run['name']} ({run['stage']})", lw=1.5 if run["head"] == "i3d" else 1.0)
    ax.set_xlabel("iteration (including the stages before)")
    ax.set_ylabel("training loss (" + ("BCE" if multi_label else "cross-entropy") + ")")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save_figure(fig, path)


def _save_figure(fig, path: Path) -> None:
    """Write a matplotlib figure as a PNG atomically, and free it."""
    import matplotlib.pyplot as plt

    tmp = path.with_suffix(".tmp.png")
    try:
        fig.tight_layout()
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
