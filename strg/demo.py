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


#: extra rows, not in the paper: a region variant whose nodes also embed their box geometry
#: (``build_model(box_geometry=True)``, strg/models/geometry.py); row name ``<head>_geo``
GEOMETRY_LABEL = " + box geometry"

#: the margins the report gives with their paired standard errors: (row, minus row)
MARGINS = (("joint_gcn", "i3d"), ("joint_gcn", "proposal_avgpool"), ("joint_gcn_geo", "joint_gcn"),
           ("proposal_avgpool_geo", "proposal_avgpool"), ("joint_gcn_geo", "proposal_avgpool_geo"))


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
    geometry_heads: tuple[str, ...] = ("proposal_avgpool", "joint_gcn")  # the "+ box geometry" rows
    # the region nodes' boxes: "proposals", the detector-like proposals (the paper's setting: RPN
    # boxes), or "ground_truth", the Something-Else annotations of the hand and the objects
    boxes: str = "proposals"


PRESETS = {
    # dim: the paper reduces 2048 -> 512 (4x); the demo's res5 has 32 * width = 256 channels -> 64
    "default": Preset(num_videos=3000, frames=16, size=64, width=8, stage_blocks=(1, 1, 1, 1), dim=64,
                      gcn_layers=3, max_boxes=8, backbone_iters=1200, graph_iters=2000, joint_iters=0,
                      batch_size=16, base_lr=0.02, num_workers=1),
    "quick": Preset(num_videos=300, frames=16, size=48, width=4, stage_blocks=(1, 1, 1, 1), dim=16,
                    gcn_layers=2, max_boxes=6, backbone_iters=40, graph_iters=15, joint_iters=10,
                    batch_size=8, base_lr=0.01, num_workers=0),
}


#: the store of each choice of boxes in the data folder
BOX_STORES = {"proposals": "proposals.sqlite", "ground_truth": "ground_truth.sqlite"}


def _box_store(data_root: Path, manifest: dict, boxes: str, variant: str) -> None:
    """With ground-truth boxes: import the dataset's Something-Else annotations into their store
    (once; the detector-like proposals' store is written by the generator)."""
    path = data_root / BOX_STORES[boxes]
    if path.is_file():
        return
    from strg.data.something_else import import_something_else

    import_something_else([str(data_root / f) for f in manifest["files"]["box_annotations"]], path,
                          video_root=str(data_root / manifest["files"]["videos"]),
                          video_ext=".webm" if variant == "something" else ".mp4",
                          fps=float(manifest["settings"]["fps"]), progress=False)


def table_rows(preset: Preset) -> list[tuple[str, str]]:
    """(row name, label): the paper's Table 2a rows, then the "+ box geometry" rows."""
    labels = dict(ROWS)
    return list(ROWS) + [(f"{head}_geo", labels[head] + GEOMETRY_LABEL) for head in preset.geometry_heads]


def run_config(preset: Preset, head: str, *, data_root: str, variant: str, seed: int, stage: str,
               init: str | None, iterations: int, lr_scale: float = 1.0, cache_dir: str | None = None,
               geometry: bool = False) -> dict:
    """The config of one run: a plain config of the engine (docs/engine.md), small sizes.

    Stage ``graph`` on the single-label data trains on the cached output of the frozen I3D
    (``train.cache_features``, saved in ``cache_dir`` and shared by the graph runs): the same
    training, 6.6-8.1x faster per iteration (docs/demo.md), so the heads get enough iterations in
    the time budget. The Charades variant samples its clips at random times of longer videos, so it
    cannot cache. ``geometry``: the region nodes embed their box geometry (``model.box_geometry``).
    """
    multi = variant == "charades"
    data = {
        "kind": "charades" if multi else "something_v2",
        "root": data_root,
        "proposals": os.path.join(data_root, BOX_STORES[preset.boxes]),
        "num_frames": preset.frames,
        "stride": 1.0, "stride_unit": "frames",
        # the frames are already small: no rescaling, the crop is the full frame
        "train_short_side": [preset.size, preset.size], "crop_size": preset.size,
        "test_short_side": preset.size, "test_clips": 1 if not multi else 3,
        "max_boxes": preset.max_boxes,
        "flip": False,  # "left to right" classes: no flip without a label map (docs/formats.md)
    }
    model = {"name": f"{head}_r50", "width": preset.width, "stage_blocks": list(preset.stage_blocks),
             "dim": preset.dim, "gcn_layers": preset.gcn_layers,
             # Trained from scratch, so BatchNorm must learn its statistics; the paper freezes
             # it because it fine-tunes an ImageNet/Kinetics-initialised I3D (section 6.1).
             "frozen_bn": False}
    if geometry:
        model["box_geometry"] = True
    cached = stage == "graph" and not multi
    return {
        "model": model,
        "data": data,
        "train": {"stage": stage, "init": init, "iterations": iterations, "batch_size": preset.batch_size,
                  "batch_per_device": preset.batch_size, "base_lr": preset.base_lr * lr_scale,
                  "base_batch": preset.batch_size, "warmup_iters": max(1, iterations // 20),
                  "lr_decay_at": 0.75, "device": "cpu", "seed": seed, "checkpoint_period": 100000,
                  "keep_checkpoints": 1, "log_period": max(1, iterations // 20), "num_workers": preset.num_workers,
                  "tensorboard": False, "cache_features": cached, "cache_dir": cache_dir if cached else None},
        "eval": {"split": "val", "combine": "max", "batch_per_device": 32, "num_workers": preset.num_workers},
    }


def _plan(preset: Preset) -> list[dict]:
    """The runs in order: (name, head, stage, init run, iterations, geometry).

    Section 6.1: the I3D first (stage ``backbone``); each region variant from it with the I3D
    frozen (stage ``graph``), then, when ``joint_iters`` > 0, end to end (stage ``joint``, lr x 0.1).
    So that every row's
    backbone gets the same number of updates, the I3D row is fine-tuned for the same ``joint``
    iterations with the same schedule (``i3d_joint``). The "+ box geometry" rows follow the same
    schedule from the same I3D."""
    runs = [{"name": "i3d", "head": "i3d", "stage": "backbone", "init": None, "iters": preset.backbone_iters}]
    if preset.joint_iters:
        runs.append({"name": "i3d_joint", "head": "i3d", "stage": "joint", "init": "i3d", "iters": preset.joint_iters})
    heads = [(head, False) for head, _ in ROWS[1:]] + [(head, True) for head in preset.geometry_heads]
    for head, geometry in heads:
        name = f"{head}_geo" if geometry else head
        runs.append({"name": f"{name}_graph", "head": head, "stage": "graph", "init": "i3d",
                     "iters": preset.graph_iters, "geometry": geometry})
        if preset.joint_iters:
            runs.append({"name": name, "head": head, "stage": "joint", "init": f"{name}_graph",
                         "iters": preset.joint_iters, "geometry": geometry})
    return runs


def _row_run(row: str, preset: Preset) -> str:
    """The run whose metrics are the table's row ``row`` (a head, or ``<head>_geo``)."""
    if row == "i3d":
        return "i3d_joint" if preset.joint_iters else "i3d"
    return row if preset.joint_iters else f"{row}_graph"


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


def _resolve_preset(quick: bool, overrides: dict | None) -> Preset:
    preset = PRESETS["quick" if quick else "default"]
    if overrides:
        unknown = set(overrides) - set(Preset.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"demo: unknown preset keys {sorted(unknown)}; "
                              f"known: {sorted(Preset.__dataclass_fields__)}")
        preset = replace(preset, **overrides)
    if preset.boxes not in BOX_STORES:
        raise ConfigError(f"demo: boxes must be one of {sorted(BOX_STORES)}, got {preset.boxes!r}")
    known = {head for head, _ in ROWS[1:]}
    if not set(preset.geometry_heads) <= known:
        raise ConfigError(f"demo: geometry_heads must be region rows ({sorted(known)}), "
                          f"got {list(preset.geometry_heads)}")
    return preset


def run_demo(out_dir: str | os.PathLike = "strg-demo", *, quick: bool = False, seed: int = 0,
             variant: str = "something", data_dir: str | os.PathLike | None = None,
             progress: bool = True, overrides: dict | None = None, reuse: bool = False,
             jobs: int | None = None) -> dict:
    """Generate data if needed, train and evaluate the Table 2a variants (and the "+ box
    geometry" rows), write the report.

    Args:
        out_dir: report folder (``report.md``, ``results.json``, ``curves.png``, ``runs/<name>/``).
            Runs already in it are redone (the folder of each run is replaced), unless ``reuse``.
        quick: the small preset (CI smoke test, about 20 s on 2 quiet cores).
        data_dir: where the synthetic data goes (default ``<out_dir>/data``); reused when it
            holds the same settings.
        overrides: Preset fields to change (e.g. ``{"backbone_iters": 1000}``).
        reuse: keep a run whose folder holds a finished run of the same config (its config.yaml,
            final checkpoint and evaluation), e.g. to add rows to a report without training the
            I3D again; its seconds are those it took then.
        jobs: how many runs may train at once, each in its own process with one thread, once the
            I3D is trained (default: torch's number of threads; 1: one after the other, each with
            torch's threads). A run's numbers depend on its thread count only through the order
            of floating-point sums.

    Returns:
        ``{"rows": [{"name", "label", "top1", "top5" | "mAP", ...}], "margins", "seconds", ...}``.
    """
    from strg.synth import generate_dataset

    preset = _resolve_preset(quick, overrides)
    jobs = _jobs(jobs)
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
    _box_store(data_root, manifest, preset.boxes, variant)
    t_data = time.time() - t_start
    say(f"strg demo: {manifest['num_train']} training / {manifest['num_val']} validation videos, "
        f"{len(manifest['classes'])} classes ({_fmt_time(t_data)})")

    plan = _plan(preset)
    results = _run_plan(plan, preset, data_root=data_root, runs_dir=out / "runs", variant=variant, seed=seed,
                        t_start=t_start, reuse=reuse, progress=progress, say=say, jobs=jobs)
    report = _make_report(plan, preset, results, runs_dir=out / "runs", data_root=data_root, variant=variant, seed=seed)
    report.update({"data_seconds": round(t_data, 1), "seconds": round(time.time() - t_start, 1)})
    _write_outputs(out, report, plan)
    say("\n" + format_table(report["rows"], variant == "charades"))
    say(f"\nreport: {out / 'report.md'} (total {_fmt_time(report['seconds'])})")
    return report


def _jobs(jobs: int | None) -> int:
    if jobs is None:
        import torch

        return torch.get_num_threads()
    if jobs < 1:
        raise ConfigError(f"demo: jobs must be >= 1, got {jobs}")
    return jobs


def _run_plan(plan: list[dict], preset: Preset, *, data_root: Path, runs_dir: Path, variant: str, seed: int,
              t_start: float, reuse: bool, progress: bool, say, jobs: int = 1) -> dict:
    """Train and evaluate every run of the plan; returns ``{run name: final metrics}`` in plan order.

    With ``jobs`` > 1 the runs that only wait for finished ones go ``jobs`` at a time, each in its
    own process with one thread (:func:`_phases`); otherwise one after the other in plan order."""
    cache_dir = runs_dir / "i3d" / "feature_cache"  # the frozen I3D's output, for the graph runs
    for run in plan:
        run["cached"] = run["stage"] == "graph" and variant != "charades"
    results, todo = {}, []
    for k, run in enumerate(plan):
        run_dir = runs_dir / run["name"]
        cfg = run_config(preset, run["head"], data_root=str(data_root), variant=variant, seed=seed,
                         stage=run["stage"], init=str(runs_dir / run["init"]) if run["init"] else None,
                         iterations=run["iters"], lr_scale=0.1 if run["stage"] == "joint" else 1.0,
                         cache_dir=str(cache_dir), geometry=run.get("geometry", False))
        cfg["train"]["progress"] = progress
        # a run is kept only if its init run was kept too (not trained again with other settings)
        init_kept = run["init"] is None or results.get(run["init"], {}).get("reused", False)
        kept = _finished_run(run_dir, cfg) if reuse and init_kept else None
        if kept is not None:
            say(f"\n[{k + 1}/{len(plan)}] {run['name']}: kept from {run_dir} (same config, finished)")
            results[run["name"]] = {**kept, "stage": run["stage"], "reused": True}
            continue
        if run_dir.exists():
            shutil.rmtree(run_dir)
        todo.append({"k": k, "run": run, "cfg": cfg, "dir": run_dir})
    rate: dict[tuple[str, bool], float] = {}  # measured seconds per iteration of each stage, I3D or not
    for phase in _phases(todo, jobs):
        if len(phase) == 1:
            item = phase[0]
            left = ""
            if rate and jobs == 1:  # time left from the measured speeds (per stage, I3D or region head)
                rest = [it["run"] for it in todo if it["run"]["name"] not in results]
                left = f", about {_fmt_time(sum(r['iters'] * _guess_rate(rate, r) for r in rest))} left"
            say(_start_line(item, len(plan), t_start, left))
            result = _train_run(item["cfg"], str(item["dir"]))
            rate[_rate_key(item["run"])] = result["seconds"] / max(1, item["run"]["iters"])
            _finish(item, result, results)
        else:
            _run_parallel(phase, jobs, results, len(plan), t_start, say)
    shutil.rmtree(cache_dir, ignore_errors=True)  # hundreds of MB, only needed by the graph runs
    return {run["name"]: results[run["name"]] for run in plan}


def _phases(todo: list[dict], jobs: int) -> list[list[dict]]:
    """The runs to train, in groups: a group of one runs in this process with its threads; a larger
    group runs ``jobs`` at a time, a process and one thread each (torch's sums in another order
    than with more threads: the same ``--threads`` gives the same table).

    One after the other when ``jobs`` is 1. Otherwise: the backbone runs alone; then one cached
    graph run alone (it computes the feature cache that the others read: the plan's last one,
    the slowest head, so that the parallel ones are the shorter); then every other run whose
    init is the I3D (the graph runs, ``i3d_joint``); then the region variants' joint runs."""
    if jobs <= 1 or len(todo) <= 1:
        return [[item] for item in todo]
    backbone = [item for item in todo if item["run"]["stage"] == "backbone"]
    cached = [item for item in todo if item["run"].get("cached")]
    builder = cached[-1:] if cached else []
    from_i3d = [item for item in todo if item["run"]["init"] == "i3d" and item not in builder]
    rest = [item for item in todo if item not in backbone + builder + from_i3d]
    return [[item] for item in backbone + builder] + [group for group in (from_i3d, rest) if group]


def _start_line(item: dict, total: int, t_start: float, extra: str = "") -> str:
    run = item["run"]
    return (f"\n[{item['k'] + 1}/{total}] {run['name']}: stage {run['stage']}, {run['iters']} iterations"
            f"{' from ' + run['init'] if run['init'] else ''} (elapsed {_fmt_time(time.time() - t_start)}{extra})")


def _train_run(cfg: dict, run_dir: str, threads: int | None = None) -> dict:
    """Train one run (in this process, or in a worker process of :func:`_run_parallel` with
    ``threads`` torch threads); its final metrics and seconds."""
    import torch

    from strg.engine import train

    if threads is not None:
        torch.set_num_threads(threads)
    t0 = time.time()
    final = train(cfg, run_dir=Path(run_dir))
    return {**{k: v for k, v in final.items() if k not in ("checkpoint", "run_dir")},
            "seconds": round(time.time() - t0, 1)}


def _finish(item: dict, result: dict, results: dict) -> None:
    results[item["run"]["name"]] = {**result, "stage": item["run"]["stage"]}
    _write(item["dir"] / "demo_result.json", json.dumps(results[item["run"]["name"]]) + "\n")


def _run_parallel(group: list[dict], jobs: int, results: dict, total: int, t_start: float, say) -> None:
    """The runs of ``group``, ``jobs`` at a time, each in a fresh process (spawned: forking a
    process whose OpenMP threads have run can hang) with one torch thread and no progress bar."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    say(f"\n{len(group)} runs, {min(jobs, len(group))} at a time (a process and one thread each; "
        f"elapsed {_fmt_time(time.time() - t_start)}):")
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(group)), mp_context=spawn) as pool:
        futures = {}
        for item in group:
            cfg = {**item["cfg"], "train": {**item["cfg"]["train"], "progress": False}}
            futures[pool.submit(_train_run, cfg, str(item["dir"]), 1)] = item
        error = None
        try:
            for future in as_completed(futures):
                item = futures[future]
                if future.cancelled():
                    continue
                if future.exception() is not None:  # keep the runs that finish; start no other
                    error = error or future.exception()
                    for other in futures:
                        other.cancel()
                    continue
                result = future.result()
                _finish(item, result, results)
                metric = f"top-1 {100 * result['top1']:.1f}" if "top1" in result else f"mAP {100 * result['mAP']:.1f}"
                say(f"[{item['k'] + 1}/{total}] {item['run']['name']}: {metric}, {_fmt_time(result['seconds'])} "
                    f"(elapsed {_fmt_time(time.time() - t_start)})")
        except KeyboardInterrupt:  # the running children got it too; the queued ones must not start
            for future in futures:
                future.cancel()
            raise
    if error is not None:
        raise error


def _finished_run(run_dir: Path, cfg: dict) -> dict | None:
    """The result of a finished run of the same config in ``run_dir`` (``demo_result.json``,
    written when it finished, and its config.yaml), else None."""
    from strg.config import load_config

    result, saved = run_dir / "demo_result.json", run_dir / "config.yaml"
    if not (result.is_file() and saved.is_file()):
        return None
    try:
        old, new = load_config(str(saved)).to_dict(), load_config(cfg).to_dict()
    except ConfigError:
        return None
    new["train"].pop("progress", None)  # how the run showed its progress does not change it
    # a key left unset here (None) was resolved by the engine when the run started (e.g. the
    # backbone source's normalisation) and saved resolved: only the keys set here are compared
    same = all(value is None or json.dumps(old[section].get(key), default=list) == json.dumps(value, default=list)
               for section, values in new.items() for key, value in values.items())
    return json.loads(result.read_text(encoding="utf-8")) if same else None


def _make_report(plan: list[dict], preset: Preset, results: dict, *, runs_dir: Path, data_root: Path, variant: str,
                 seed: int) -> dict:
    """The table rows, per-class accuracies and paired margins of one seed."""
    multi = variant == "charades"
    rows = []
    for name, label in table_rows(preset):
        run = _row_run(name, preset)
        r = results[run]
        row = {"name": name, "label": label, "run": run}
        row.update({"mAP": r["mAP"], "wAP": r["wAP"]} if multi else {"top1": r["top1"], "top5": r["top5"]})
        rows.append(row)
    per_class, margins = None, None
    if not multi:
        hits, labels, classes = video_hits(rows, runs_dir, str(data_root))
        per_class = per_class_accuracy(hits, labels, classes)
        margins = paired_margins(hits)
    return {"rows": rows, "runs": results, "per_class": per_class, "margins": margins, "preset": asdict(preset),
            "variant": variant, "seed": seed, "data": str(data_root)}


def _write_outputs(out: Path, report: dict, plan: list[dict]) -> None:
    multi = report["variant"] == "charades"
    _write(out / "results.json", json.dumps(report, indent=1) + "\n")
    plot_curves(plan, out / "runs", out / "curves.png", multi)
    if report["per_class"] is not None:
        plot_per_class(report["per_class"], report["rows"], out / "per_class.png")
    _write(out / "report.md", _report_md(report, format_table(report["rows"], multi)))


def run_demos(out_dir: str | os.PathLike, seeds: list[int], **kwargs) -> dict:
    """:func:`run_demo` for each seed (in ``<out_dir>/seed-<s>``), then ``<out_dir>/summary.md``
    and ``summary.json``: each row's top-1 averaged over the seeds, the margins averaged with their
    standard errors (:func:`combine_margins`), and the per-class accuracies averaged."""
    out = Path(out_dir)
    reports = [run_demo(out / f"seed-{seed}", seed=seed, **kwargs) for seed in seeds]
    summary = summarize(reports)
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    _write(out / "summary.md", _summary_md(summary))
    if summary["per_class"] is not None:
        plot_per_class(summary["per_class"], summary["rows"], out / "per_class.png")
    if kwargs.get("progress", True):
        print("\n" + _summary_md(summary))
    return summary


def summarize(reports: list[dict]) -> dict:
    """Rows, margins and per-class accuracies averaged over single-label demo reports (seeds)."""
    multi = reports[0]["variant"] == "charades"
    keys = ("mAP", "wAP") if multi else ("top1", "top5")
    rows = []
    for r0 in reports[0]["rows"]:
        same = [row for rep in reports for row in rep["rows"] if row["name"] == r0["name"]]
        rows.append({"name": r0["name"], "label": r0["label"], **{k: sum(r[k] for r in same) / len(same) for k in keys},
                     "per_seed": [r[keys[0]] for r in same]})
    per_class = None
    if not multi:
        first = reports[0]["per_class"]
        per_class = {"classes": first["classes"], "videos": [sum(rep["per_class"]["videos"][c] for rep in reports)
                                                             for c in range(len(first["classes"]))]}
        for row in rows:
            values = [[rep["per_class"][row["name"]][c] for rep in reports] for c in range(len(first["classes"]))]
            per_class[row["name"]] = [None if None in v else round(sum(v) / len(v), 1) for v in values]
    return {"seeds": [rep["seed"] for rep in reports], "variant": reports[0]["variant"], "rows": rows,
            "margins": combine_margins([rep["margins"] for rep in reports]) if not multi else None,
            "per_class": per_class, "preset": reports[0]["preset"],
            # each seed's wall time, data included (runs train in parallel: their own times overlap;
            # a run kept by --reuse takes no time)
            "seconds": [rep["seconds"] for rep in reports]}


def _summary_md(summary: dict) -> str:
    multi = summary["variant"] == "charades"
    key = "mAP" if multi else "top1"
    lines = [f"| model | {'mAP' if multi else 'top-1'} (mean) | per seed |", "| --- | ---: | --- |"]
    lines += [f"| {r['label']} | {100 * r[key]:.1f} | " + ", ".join(f"{100 * v:.1f}" for v in r["per_seed"]) + " |"
              for r in summary["rows"]]
    text = (f"# strg demo, seeds {', '.join(map(str, summary['seeds']))}\n\n" + "\n".join(lines) + "\n\n")
    if summary["margins"]:
        text += ("## Margins (top-1 points; mean over the seeds, standard error from the paired errors of each seed)"
                 f"\n\n{format_margins(summary['margins'], {r['name']: r['label'] for r in summary['rows']})}\n\n")
    if summary["per_class"]:
        text += (f"## Per class (validation top-1, %, mean over the seeds)\n\n"
                 f"{format_per_class(summary['per_class'], summary['rows'])}\n\n"
                 "![per-class accuracy](per_class.png)\n\n")
    return text + "Each seed's report: `seed-<s>/report.md`. Wall time per seed, data included: " + \
        ", ".join(_fmt_time(t) for t in summary["seconds"]) + ".\n"


def format_table(rows: list[dict], multi_label: bool) -> str:
    """A markdown table shaped like the paper's Table 2a (percentages)."""
    if multi_label:
        lines = ["| model | mAP | wAP |", "| --- | ---: | ---: |"]
        lines += [f"| {r['label']} | {100 * r['mAP']:.1f} | {100 * r['wAP']:.1f} |" for r in rows]
    else:
        lines = ["| model | top-1 | top-5 |", "| --- | ---: | ---: |"]
        lines += [f"| {r['label']} | {100 * r['top1']:.1f} | {100 * r['top5']:.1f} |" for r in rows]
    return "\n".join(lines)


def video_hits(rows: list[dict], runs_dir: Path, data_root: str) -> tuple[dict, list[int], list[str]]:
    """Whether each row's run got each validation video right, from its ``predictions_val.txt``.

    Returns ``({row name: [0/1 per video]}, [label per video], [class names])``, videos in the
    order of the validation list; a video missing from the predictions (it could not be read)
    counts as wrong, as in top-1.
    """
    from strg.data import build_dataset
    from strg.metrics import read_submission

    val = build_dataset("something_v2", split="val", training=False, root=data_root)
    hits = {}
    for row in rows:
        ids, scores = read_submission(runs_dir / row["run"] / "predictions_val.txt")
        predicted = dict(zip(ids, scores.argmax(1).tolist()))
        hits[row["name"]] = [int(predicted.get(rec.video_id, -1) == rec.label) for rec in val.videos]
    return hits, [rec.label for rec in val.videos], list(val.classes)


def per_class_accuracy(hits: dict, labels: list[int], classes: list[str]) -> dict:
    """Top-1 accuracy per class of each row, from :func:`video_hits`.

    Returns ``{"classes": [names], "videos": [count per class], "<row name>": [percent per class]}``.
    """
    import numpy as np

    labels_a = np.array(labels)
    out: dict = {"classes": list(classes), "videos": np.bincount(labels_a, minlength=len(classes)).tolist()}
    for name, hit in hits.items():
        hit_a = np.array(hit, dtype=float)
        out[name] = [round(100.0 * float(hit_a[labels_a == c].mean()), 1) if (labels_a == c).any() else None
                     for c in range(len(classes))]
    return out


def paired_margins(hits: dict) -> list[dict]:
    """The margins of :data:`MARGINS` (in top-1 points) with their paired standard errors.

    On the same validation videos, the margin of row a over row b is the mean of d_i = hit_a(i) -
    hit_b(i) over the n videos, and its standard error is std(d) / sqrt(n) (sample std): the
    paired form, smaller than the two rows' own errors combined when they err on the same videos.
    It measures the spread over validation videos of one training run, not over training seeds.
    """
    import numpy as np

    out = []
    for a, b in MARGINS:
        if a not in hits or b not in hits:
            continue
        d = np.array(hits[a], dtype=float) - np.array(hits[b], dtype=float)
        se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
        out.append({"row": a, "minus": b, "margin": round(100 * float(d.mean()), 2), "se": round(100 * se, 2),
                    "videos": len(d)})
    return out


def combine_margins(per_seed: list[list[dict]]) -> list[dict]:
    """The mean margin over seeds (each seed a list from :func:`paired_margins`), with the
    standard error of that mean, sqrt(sum se_s^2) / S (independent seeds, each its own data)."""
    import math

    out = []
    for first in per_seed[0]:
        same = [m for seed in per_seed for m in seed if m["row"] == first["row"] and m["minus"] == first["minus"]]
        if len(same) != len(per_seed):
            continue
        mean = sum(m["margin"] for m in same) / len(same)
        se = math.sqrt(sum(m["se"] ** 2 for m in same)) / len(same)
        out.append({"row": first["row"], "minus": first["minus"], "margin": round(mean, 2), "se": round(se, 2),
                    "per_seed": [m["margin"] for m in same]})
    return out


def format_margins(margins: list[dict], labels: dict) -> str:
    """A markdown table of paired margins (top-1 points +- paired standard error)."""
    seeds = "per_seed" in margins[0] if margins else False
    lines = ["| margin | top-1 points | paired s.e. |" + (" per seed |" if seeds else ""),
             "| --- | ---: | ---: |" + (" --- |" if seeds else "")]
    for m in margins:
        extra = " " + ", ".join(f"{v:+.1f}" for v in m["per_seed"]) + " |" if seeds else ""
        lines.append(f"| {labels.get(m['row'], m['row'])} - {labels.get(m['minus'], m['minus'])} | "
                     f"{m['margin']:+.1f} | {m['se']:.1f} |{extra}")
    return "\n".join(lines)


def format_per_class(per_class: dict, rows: list[dict]) -> str:
    """A markdown table: one line per class, one column per row of the table."""
    head = "| class | videos | " + " | ".join(r["label"] for r in rows) + " |"
    lines = [head, "| --- | ---: |" + " ---: |" * len(rows)]
    for c, name in enumerate(per_class["classes"]):
        cells = ["-" if per_class[r["name"]][c] is None else f"{per_class[r['name']][c]:.0f}" for r in rows]
        lines.append(f"| {name} | {per_class['videos'][c]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_per_class(per_class: dict, rows: list[dict], path: Path) -> None:
    """A class x model grid (PNG): each cell coloured by and labelled with the row's top-1 on the
    class (%), one column per row of the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    classes = per_class["classes"]
    grid = np.array([[np.nan if v is None else v for v in per_class[r["name"]]] for r in rows]).T  # (classes, rows)
    fig, ax = plt.subplots(figsize=(1.1 * len(rows) + 3.5, 0.42 * len(classes) + 1.6))
    ax.imshow(grid, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=8,
                        color="black" if grid[i, j] > 60 else "white")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["label"].replace(GEOMETRY_LABEL, "\n" + GEOMETRY_LABEL.strip()) for r in rows], fontsize=7)
    ax.set_yticks(range(len(classes)))
    ax.set_yticklabels([f"{c} ({n})" for c, n in zip(classes, per_class["videos"])], fontsize=7)
    ax.set_title("validation top-1 per class (%); videos per class in brackets", fontsize=9)
    _save_figure(fig, path)


def _report_md(report: dict, table: str) -> str:
    p = report["preset"]
    metric = "mAP" if report["variant"] == "charades" else "top1"
    runs = "\n".join(f"| {n} | {r['stage']} | {r['iteration']} | {r['train_loss']:.3f} | {100 * r[metric]:.1f} | "
                     f"{r['seconds']}{' (kept)' if r.get('reused') else ''} |"
                     for n, r in report["runs"].items())
    return (f"# strg demo ({report['variant']}, seed {report['seed']})\n\n{table}\n\n"
            f"Validation videos of the synthetic data in `{report['data']}`; small I3D (width {p['width']}, "
            f"blocks {p['stage_blocks']}, d = {p['dim']}), {p['frames']} frames of {p['size']} px, "
            f"{p['max_boxes']} proposals per frame. Region variants start from the I3D run with the I3D "
            f"frozen (stage `graph`, {p['graph_iters']} iterations, paper section 6.1)"
            + (f", then train end to end (stage `joint`, {p['joint_iters']} iterations at 0.1x the learning rate); "
               f"the I3D row is the I3D fine-tuned for the same {p['joint_iters']} iterations, so that every "
               f"backbone gets the same number of updates" if p["joint_iters"] else "")
            + f". Rows ending in \"{GEOMETRY_LABEL.strip()}\" are not in the paper: the same variant whose region "
            f"nodes also embed their box's position, size and motion (`model.box_geometry`, "
            f"strg/models/geometry.py).\n\n"
            + (f"## Margins (top-1 points, paired standard error over the validation videos)\n\n"
               f"{format_margins(report['margins'], {r['name']: r['label'] for r in report['rows']})}\n\n"
               if report.get("margins") else "")
            + f"| run | stage | iterations | train loss (last batch) | {'top-1' if metric == 'top1' else metric} "
            "| seconds |\n"
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
