"""`strg demo --quick` end to end: data, five runs through the engine, the table and the report."""

from __future__ import annotations

import json

import pytest

from strg.demo import PRESETS, ROWS, format_table, run_config


def test_quick_demo_produces_the_table(tmp_path, capsys):
    from strg.cli import main

    assert main(["demo", "--quick", "--out", str(tmp_path / "demo"), "--seed", "0"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("| model | top-1 | top-5 |"):]
    for _, label in ROWS:  # one row per Table 2a variant, with two percentages each
        line = next(l for l in table.splitlines() if l.startswith(f"| {label} |"))
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
    assert "stage graph" in log and "runs/i3d" in log and "frozen 0 " not in log
    assert "stage joint" in (runs / "st_gcn" / "log.txt").read_text() and "runs/st_gcn_graph" in (runs / "st_gcn" / "log.txt").read_text()
    assert report["rows"][0]["run"] == "i3d_joint" and report["rows"][-1]["run"] == "joint_gcn"
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
        assert resolved["model"]["name"] == f"{head}_r50" and resolved["data"]["kind"] == "something_v2"
        assert resolved["train"]["stage"] == cfg["train"]["stage"]


def test_unknown_preset_key_is_refused(tmp_path):
    from strg.demo import run_demo
    from strg.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown preset keys"):
        run_demo(tmp_path, quick=True, overrides={"iterations": 3}, progress=False)


def test_same_seed_same_table(tmp_path):
    from strg.demo import run_demo

    tiny = {"num_videos": 30, "backbone_iters": 3, "graph_iters": 2}
    data = tmp_path / "data"
    a = run_demo(tmp_path / "a", quick=True, seed=5, data_dir=data, overrides=tiny, progress=False)
    b = run_demo(tmp_path / "b", quick=True, seed=5, data_dir=data, overrides=tiny, progress=False)
    assert a["rows"] == b["rows"]
    assert a["runs"]["i3d"]["train_loss"] == b["runs"]["i3d"]["train_loss"]
