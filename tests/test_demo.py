"""`strg demo --quick` end to end (data, the ten runs of the stage-wise plan through the engine,
the table and the report), and the plan, the table rows and the per-class accuracies alone."""

from __future__ import annotations

import json
import re

import pytest

from strg.demo import PRESETS, ROWS, format_table, run_config


def test_quick_demo_produces_the_table(tmp_path, capsys):
    from strg.cli import main

    assert main(["demo", "--quick", "--out", str(tmp_path / "demo"), "--seed", "0"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("| model | top-1 | top-5 |"):]
    for _, label in ROWS:  # one row per Table 2a variant, with two percentages each
        line = next(row for row in table.splitlines() if row.startswith(f"| {label} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert all(0.0 <= float(c) <= 100.0 for c in cells[1:])
    assert "[9/10] joint_gcn_graph" in out and "[10/10] joint_gcn" in out  # the progress display names each run

    report = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert [r["name"] for r in report["rows"]] == [h for h, _ in ROWS]
    assert (tmp_path / "demo" / "curves.png").stat().st_size > 1000
    assert (tmp_path / "demo" / "per_class.png").stat().st_size > 1000
    # per-class accuracies, weighted by the videos of each class, give back each row's top-1
    per_class = report["per_class"]
    assert len(per_class["classes"]) == 10 and sum(per_class["videos"]) == report["runs"]["i3d"]["num_videos"]
    for row in report["rows"]:
        weighted = sum(a * n for a, n in zip(per_class[row["name"]], per_class["videos"]) if a is not None)
        assert weighted / sum(per_class["videos"]) == pytest.approx(100 * row["top1"], abs=0.1)
    md = (tmp_path / "demo" / "report.md").read_text()
    assert format_table(report["rows"], multi_label=False) in md
    for run in ("i3d", "i3d_joint", "proposal_avgpool_graph", "proposal_avgpool", "joint_gcn_graph", "joint_gcn"):
        run_dir = tmp_path / "demo" / "runs" / run
        assert (run_dir / "config.yaml").exists() and (run_dir / "metrics.jsonl").exists()
    # the graph runs started from the I3D run, with the backbone frozen (paper section 6.1), then
    # trained end to end from there; the I3D row is the I3D fine-tuned for as many iterations
    runs = tmp_path / "demo" / "runs"
    log = (runs / "st_gcn_graph" / "log.txt").read_text()
    assert "stage graph" in log and "runs/i3d" in log
    assert int(re.search(r"frozen (\d+) parameter tensors", log).group(1)) > 0
    assert int(re.search(r"frozen (\d+) parameter tensors", (runs / "st_gcn" / "log.txt").read_text()).group(1)) == 0
    assert "stage joint" in (runs / "st_gcn" / "log.txt").read_text() and "runs/st_gcn_graph" in (runs / "st_gcn" / "log.txt").read_text()
    assert report["rows"][0]["run"] == "i3d_joint" and report["rows"][-1]["run"] == "joint_gcn"
    # the graph runs train on the frozen I3D's output: computed by the first, loaded by the others,
    # deleted at the end
    logs = [(runs / f"{h}_graph" / "log.txt").read_text() for h in ("proposal_avgpool", "st_gcn", "sim_gcn", "joint_gcn")]
    assert "training clips, (" in logs[0] and "saved to" in logs[0]
    assert all("train.cache_features: the backbone's output of" in lg and "from " in lg.split("train.cache_features")[1] for lg in logs[1:])
    assert not (runs / "i3d" / "feature_cache").exists()
    assert report["runs"]["i3d_joint"]["iteration"] == report["runs"]["joint_gcn"]["iteration"] == PRESETS["quick"].joint_iters
    # the data is cached: a second call reuses it (same manifest, no rendering)
    manifest = json.loads(next((tmp_path / "demo" / "data").glob("*/synth.json")).read_text())
    assert manifest["settings"]["num_videos"] == PRESETS["quick"].num_videos


def test_run_config_is_a_valid_engine_config(tmp_path):
    """Every demo config passes the engine's validation (no demo-only keys)."""
    from strg.config import load_config

    for head, _ in ROWS:
        cfg = run_config(PRESETS["default"], head, data_root=str(tmp_path), variant="something", seed=0,
                         stage="backbone" if head == "i3d" else "graph", init=None if head == "i3d" else "x",
                         iterations=10)
        resolved = load_config(cfg, [])
        assert resolved.model.name == f"{head}_r50" and resolved.data.kind == "something_v2"
        assert resolved.train.stage == cfg["train"]["stage"]


def test_unknown_preset_key_is_refused(tmp_path):
    from strg.demo import run_demo
    from strg.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown preset keys"):
        run_demo(tmp_path, quick=True, overrides={"iterations": 3}, progress=False)


def test_same_seed_same_table(tmp_path):
    from strg.demo import run_demo

    tiny = {"num_videos": 30, "backbone_iters": 3, "graph_iters": 2, "joint_iters": 1}
    data = tmp_path / "data"
    a = run_demo(tmp_path / "a", quick=True, seed=5, data_dir=data, overrides=tiny, progress=False)
    b = run_demo(tmp_path / "b", quick=True, seed=5, data_dir=data, overrides=tiny, progress=False)
    assert a["rows"] == b["rows"]
    assert a["runs"]["i3d"]["train_loss"] == b["runs"]["i3d"]["train_loss"]


def test_plan_and_table_rows():
    """With a joint stage: 10 runs, each region run from its graph run, the I3D row fine-tuned
    alike; without: 5 runs, the rows are the graph runs and the I3D run itself."""
    from dataclasses import replace

    from strg.demo import _plan, _row_run

    preset = replace(PRESETS["default"], joint_iters=200)
    plan = {r["name"]: r for r in _plan(preset)}
    assert len(plan) == 10 and plan["i3d"]["init"] is None
    assert plan["i3d_joint"]["init"] == "i3d" and plan["i3d_joint"]["iters"] == preset.joint_iters
    assert plan["sim_gcn"]["init"] == "sim_gcn_graph" and plan["sim_gcn_graph"]["init"] == "i3d"
    assert [_row_run(h, preset) for h, _ in ROWS] == ["i3d_joint", "proposal_avgpool", "st_gcn", "sim_gcn", "joint_gcn"]
    no_joint = replace(preset, joint_iters=0)
    assert [r["name"] for r in _plan(no_joint)] == ["i3d"] + [f"{h}_graph" for h, _ in ROWS[1:]]
    assert [_row_run(h, no_joint) for h, _ in ROWS] == ["i3d"] + [f"{h}_graph" for h, _ in ROWS[1:]]


def test_per_class_accuracy_counts_missing_videos_as_wrong(tmp_path):
    """Per-class accuracies from the predictions files; a video left out of the predictions (it
    could not be read) is a miss, as in the engine's top-1."""
    import numpy as np

    from strg.data import build_dataset
    from strg.demo import per_class_accuracy
    from strg.metrics import write_submission
    from strg.synth import generate_dataset

    root = tmp_path / "data"
    generate_dataset(root, seed=3, num_videos=40, frames=8, size=32, variant="something", progress=False)
    val = build_dataset("something_v2", split="val", training=False, root=str(root))
    labels = [rec.label for rec in val.videos]
    ids = [rec.video_id for rec in val.videos]
    perfect = np.eye(len(val.classes))[labels]  # every video right
    write_submission(tmp_path / "runs" / "a" / "predictions_val.txt", ids, perfect)
    write_submission(tmp_path / "runs" / "b" / "predictions_val.txt", ids[1:], perfect[1:])  # first missing
    rows = [{"name": "x", "run": "a"}, {"name": "y", "run": "b"}]
    out = per_class_accuracy(rows, tmp_path / "runs", str(root))
    counts = np.bincount(labels, minlength=len(val.classes))
    assert out["videos"] == counts.tolist()
    assert out["x"] == [100.0 if n else None for n in counts]
    missed = labels[0]
    assert out["y"][missed] == round(100.0 * (counts[missed] - 1) / counts[missed], 1)
    assert all(out["y"][c] == out["x"][c] for c in range(len(counts)) if c != missed)
