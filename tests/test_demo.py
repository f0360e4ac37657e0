"""`strg demo --quick` end to end (data, the ten runs of the stage-wise plan through the engine,
the table and the report), and the plan, the table rows and the per-class accuracies alone."""

from __future__ import annotations

import json
import re

import pytest

from strg.demo import PRESETS, ROWS, format_table, run_config, table_rows


def test_quick_demo_produces_the_table(tmp_path, capsys):
    from strg.cli import main

    # --jobs 2: after the I3D, runs train two at a time in their own processes
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo"), "--seed", "0", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("| model | top-1 | top-5 |"):]
    for _, label in table_rows(PRESETS["quick"]):  # Table 2a's rows, then "+ box geometry", two percentages each
        line = next(row for row in table.splitlines() if row.startswith(f"| {label} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert all(0.0 <= float(c) <= 100.0 for c in cells[1:])
    assert "[9/14] joint_gcn_graph" in out and "[10/14] joint_gcn" in out  # the progress display names each run
    assert "[14/14] joint_gcn_geo" in out

    report = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert [r["name"] for r in report["rows"]] == [h for h, _ in ROWS] + ["proposal_avgpool_geo", "joint_gcn_geo"]
    labels = [r["label"] for r in report["rows"][-2:]]
    assert labels == ["Proposal + AvgPool + box geometry", "Joint GCN + box geometry"]
    # the geometry rows' runs are the same variants with model.box_geometry, from the same I3D
    import yaml

    geo_cfg = yaml.safe_load((tmp_path / "demo" / "runs" / "joint_gcn_geo_graph" / "config.yaml").read_text())
    assert geo_cfg["model"]["box_geometry"] is True and geo_cfg["model"]["name"] == "joint_gcn_r50"
    plain_cfg = yaml.safe_load((tmp_path / "demo" / "runs" / "joint_gcn" / "config.yaml").read_text())
    assert not plain_cfg["model"].get("box_geometry", False)
    # paired margins: the mean difference of the rows' top-1 on the same videos
    top1 = {r["name"]: r["top1"] for r in report["rows"]}
    for m in report["margins"]:
        assert m["margin"] == pytest.approx(100 * (top1[m["row"]] - top1[m["minus"]]), abs=0.01)
        assert m["se"] >= 0 and m["videos"] == report["runs"]["i3d"]["num_videos"]
    assert (tmp_path / "demo" / "curves.png").stat().st_size > 1000
    assert (tmp_path / "demo" / "per_class.png").stat().st_size > 1000
    # per-class accuracies, weighted by the videos of each class, give back each row's top-1
    per_class = report["per_class"]
    assert len(per_class["classes"]) == 10 and sum(per_class["videos"]) == report["runs"]["i3d"]["num_videos"]
    for row in report["rows"]:
        weighted = sum(a * n for a, n in zip(per_class[row["name"]], per_class["videos"]) if a is not None)
        assert weighted / sum(per_class["videos"]) == pytest.approx(100 * row["top1"], abs=0.1)
    md = (tmp_path / "demo" / "report.md").read_text()
    assert format_table(report["rows"], multi_label=False) in md and "## Margins" in md
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
    st_log = (runs / "st_gcn" / "log.txt").read_text()
    assert "stage joint" in st_log and "runs/st_gcn_graph" in st_log
    assert report["rows"][0]["run"] == "i3d_joint" and report["rows"][4]["run"] == "joint_gcn"
    assert report["rows"][-1]["run"] == "joint_gcn_geo"
    # the graph runs train on the frozen I3D's output: computed by one (alone, before the others
    # start), loaded by the others, deleted at the end
    logs = [(runs / f"{h}_graph" / "log.txt").read_text()
            for h in ("proposal_avgpool", "st_gcn", "sim_gcn", "joint_gcn", "proposal_avgpool_geo", "joint_gcn_geo")]
    built = [lg for lg in logs if "training clips, (" in lg and "saved to" in lg]
    assert built == [logs[-1]]  # the plan's last graph run, the slowest head
    assert all("train.cache_features: the backbone's output of" in lg and "from " in lg.split("train.cache_features")[1]
               for lg in logs[:-1])
    assert not (runs / "i3d" / "feature_cache").exists()
    joint = PRESETS["quick"].joint_iters
    assert report["runs"]["i3d_joint"]["iteration"] == report["runs"]["joint_gcn"]["iteration"] == joint
    # the data is cached: a second call reuses it (same manifest, no rendering)
    manifest = json.loads(next((tmp_path / "demo" / "data").glob("*/synth.json")).read_text())
    assert manifest["settings"]["num_videos"] == PRESETS["quick"].num_videos


def test_run_config_is_a_valid_engine_config(tmp_path):
    """Every demo config passes the engine's validation (no demo-only keys)."""
    from strg.config import load_config

    for (head, _), geometry in [(row, False) for row in ROWS] + [(row, True) for row in ROWS[1:]]:
        cfg = run_config(PRESETS["default"], head, data_root=str(tmp_path), variant="something", seed=0,
                         stage="backbone" if head == "i3d" else "graph", init=None if head == "i3d" else "x",
                         iterations=10, geometry=geometry)
        resolved = load_config(cfg, [])
        assert resolved.model.name == f"{head}_r50" and resolved.data.kind == "something_v2"
        assert resolved.model.box_geometry is geometry
        assert resolved.train.stage == cfg["train"]["stage"]


def test_unknown_preset_key_and_bad_jobs_are_refused(tmp_path):
    from strg.demo import run_demo
    from strg.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown preset keys"):
        run_demo(tmp_path, quick=True, overrides={"iterations": 3}, progress=False)
    with pytest.raises(ConfigError, match="jobs must be >= 1"):
        run_demo(tmp_path / "j", quick=True, progress=False, jobs=0)
    assert not (tmp_path / "j" / "data").exists()  # refused before any data is written


def test_same_seed_same_table(tmp_path, one_thread):
    """The same seed gives the same table, whether the runs after the I3D train one after the
    other or two at a time in their own processes (one thread each, as here)."""
    from strg.demo import run_demo

    tiny = {"num_videos": 30, "backbone_iters": 3, "graph_iters": 2, "joint_iters": 1}
    data = tmp_path / "data"
    a = run_demo(tmp_path / "a", quick=True, seed=5, data_dir=data, overrides=tiny, progress=False, jobs=1)
    b = run_demo(tmp_path / "b", quick=True, seed=5, data_dir=data, overrides=tiny, progress=False, jobs=2)
    assert a["rows"] == b["rows"]
    for name, run in a["runs"].items():
        assert run["train_loss"] == b["runs"][name]["train_loss"], name
    # --reuse keeps every finished run of the same config, and gives the same table
    c = run_demo(tmp_path / "a", quick=True, seed=5, data_dir=data, overrides=tiny, progress=False, reuse=True)
    assert c["rows"] == a["rows"] and all(r.get("reused") for r in c["runs"].values())
    # another setting of a run: that run and those after it that depend on it are trained again
    d = run_demo(tmp_path / "a", quick=True, seed=5, data_dir=data, overrides={**tiny, "graph_iters": 3},
                 progress=False, reuse=True)
    assert d["runs"]["i3d"].get("reused") and not d["runs"]["joint_gcn_graph"].get("reused")
    # the I3D trained again: every run that starts from it is trained again too
    e = run_demo(tmp_path / "a", quick=True, seed=5, data_dir=data, overrides={**tiny, "backbone_iters": 4},
                 progress=False, reuse=True, jobs=1)
    assert not any(run.get("reused") for run in e["runs"].values())


def test_plan_and_table_rows():
    """With a joint stage: 10 runs, each region run from its graph run, the I3D row fine-tuned
    alike; without: 5 runs, the rows are the graph runs and the I3D run itself."""
    from dataclasses import replace

    from strg.demo import _plan, _row_run

    preset = replace(PRESETS["default"], joint_iters=200)
    plan = {r["name"]: r for r in _plan(preset)}
    assert len(plan) == 14 and plan["i3d"]["init"] is None
    assert plan["joint_gcn_geo"]["init"] == "joint_gcn_geo_graph" and plan["joint_gcn_geo_graph"]["geometry"]
    assert plan["i3d_joint"]["init"] == "i3d" and plan["i3d_joint"]["iters"] == preset.joint_iters
    assert plan["sim_gcn"]["init"] == "sim_gcn_graph" and plan["sim_gcn_graph"]["init"] == "i3d"
    assert [_row_run(h, preset) for h, _ in ROWS] == ["i3d_joint", "proposal_avgpool", "st_gcn", "sim_gcn", "joint_gcn"]
    no_joint = replace(preset, joint_iters=0)
    geo = ["proposal_avgpool_geo_graph", "joint_gcn_geo_graph"]
    assert [r["name"] for r in _plan(no_joint)] == ["i3d"] + [f"{h}_graph" for h, _ in ROWS[1:]] + geo
    rows = [_row_run(h, no_joint) for h, _ in table_rows(no_joint)]
    assert rows == ["i3d"] + [f"{h}_graph" for h, _ in ROWS[1:]] + geo
    assert len(_plan(replace(no_joint, geometry_heads=()))) == 5


def test_per_class_accuracy_counts_missing_videos_as_wrong(tmp_path):
    """Per-class accuracies from the predictions files; a video left out of the predictions (it
    could not be read) is a miss, as in the engine's top-1."""
    import numpy as np

    from strg.data import build_dataset
    from strg.demo import per_class_accuracy, video_hits
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
    out = per_class_accuracy(*video_hits(rows, tmp_path / "runs", str(root)))
    counts = np.bincount(labels, minlength=len(val.classes))
    assert out["videos"] == counts.tolist()
    assert out["x"] == [100.0 if n else None for n in counts]
    missed = labels[0]
    assert out["y"][missed] == round(100.0 * (counts[missed] - 1) / counts[missed], 1)
    assert all(out["y"][c] == out["x"][c] for c in range(len(counts)) if c != missed)


def test_paired_margins_and_their_mean_over_seeds():
    """Margins and paired standard errors against a hand computation."""
    from strg.demo import combine_margins, paired_margins

    hits = {"joint_gcn": [1, 1, 1, 0, 1], "i3d": [1, 0, 0, 0, 1]}  # d = 0, 1, 1, 0, 0
    (m,) = paired_margins(hits)
    # mean 0.4; sample std sqrt(((0.4)^2 * 3 + (0.6)^2 * 2) / 4) = sqrt(0.3); se = sqrt(0.3 / 5)
    assert (m["row"], m["minus"], m["margin"], m["videos"]) == ("joint_gcn", "i3d", 40.0, 5)
    assert m["se"] == pytest.approx(100 * (0.3 / 5) ** 0.5, abs=0.01)
    (c,) = combine_margins([[{**m, "margin": 40.0, "se": 3.0}], [{**m, "margin": 20.0, "se": 4.0}]])
    assert c["margin"] == 30.0 and c["se"] == 2.5 and c["per_seed"] == [40.0, 20.0]


def test_summary_of_two_seeds(tmp_path):
    """Rows and per-class accuracies averaged over seeds; the grid picture is written."""
    from strg.demo import _summary_md, plot_per_class, summarize

    def report(seed, a, b):
        return {"seed": seed, "variant": "something", "seconds": 60.0, "preset": {}, "runs": {"i3d": {"seconds": 30.0}},
                "rows": [{"name": "i3d", "label": "I3D", "top1": a, "top5": 1.0},
                         {"name": "joint_gcn", "label": "Joint GCN", "top1": b, "top5": 1.0}],
                "margins": [{"row": "joint_gcn", "minus": "i3d", "margin": 100 * (b - a), "se": 2.0, "videos": 10}],
                "per_class": {"classes": ["x", "y"], "videos": [5, 5], "i3d": [100 * a, 100 * a],
                              "joint_gcn": [100 * b, None]}}

    s = summarize([report(0, 0.5, 0.6), report(1, 0.7, 0.9)])
    assert [r["top1"] for r in s["rows"]] == [pytest.approx(0.6), pytest.approx(0.75)]
    assert s["margins"][0]["margin"] == pytest.approx(15.0)
    assert s["margins"][0]["per_seed"] == [pytest.approx(10.0), pytest.approx(20.0)]
    assert s["per_class"]["i3d"] == [60.0, 60.0] and s["per_class"]["joint_gcn"] == [75.0, None]
    assert "| Joint GCN - I3D | +15.0 | 1.4 | +10.0, +20.0 |" in _summary_md(s)
    plot_per_class(s["per_class"], s["rows"], tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 1000


def test_ground_truth_boxes(tmp_path, one_thread):
    """--set boxes=ground_truth: the region runs read the Something-Else annotations (the hand and
    the template's objects), imported into their own store; other values are refused."""
    from strg.data.proposals import ProposalStore
    from strg.demo import run_demo
    from strg.errors import ConfigError

    with pytest.raises(ConfigError, match="boxes must be one of"):
        run_demo(tmp_path / "bad", quick=True, overrides={"boxes": "gt"}, progress=False)
    tiny = {"num_videos": 30, "backbone_iters": 2, "graph_iters": 2, "joint_iters": 0, "geometry_heads": [],
            "boxes": "ground_truth"}
    run_demo(tmp_path / "gt", quick=True, seed=5, overrides=tiny, progress=False, jobs=1)
    data = next((tmp_path / "gt" / "data").glob("something-*"))
    annotations = {}
    for part in sorted((data / "annotations").glob("*.json")):
        annotations.update(json.loads(part.read_text()))
    with ProposalStore(data / "ground_truth.sqlite") as store:
        assert len(store) == len(annotations) == 30
        vid = sorted(annotations)[0]
        first = annotations[vid][0]["labels"]  # the first frame's annotated boxes, in the store's frame 0
        assert int(store.get(vid)["num_boxes"][0]) == len(first)
    cfg = (tmp_path / "gt" / "runs" / "joint_gcn_graph" / "config.yaml").read_text()
    assert str(data / "ground_truth.sqlite") in cfg
