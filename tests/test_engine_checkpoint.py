"""Checkpoints: atomic writes, truncated files, mismatch messages, resume past a broken file."""

import os
import re

import pytest
import torch

from strg.engine import train
from strg.engine.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_for_stage,
    load_model_state,
    save_checkpoint,
)
from strg.errors import CheckpointError
from strg.models import build_model


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def small(name, num_classes=3):
    torch.manual_seed(0)
    return build_model(name, num_classes=num_classes, width=4, stage_blocks=(1, 1, 1, 1), dim=8, gcn_layers=1)


def test_save_is_atomic_and_round_trips(tmp_path, monkeypatch):
    model = small("joint_gcn_r50")
    path = checkpoint_path(tmp_path, 5)
    save_checkpoint(path, {"iteration": 5, "model": model.state_dict(), "config": {"a": [1, 2]}})
    state = load_checkpoint(path)
    assert state["iteration"] == 5 and state["config"] == {"a": [1, 2]}
    load_model_state(small("joint_gcn_r50"), state, path)  # strict: every key fits
    before = path.read_bytes()

    # a crash in the middle of a write leaves the previous file as it was and no temporary file
    def boom(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, {"iteration": 6, "model": model.state_dict()})
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == [path.name]


def test_truncated_checkpoint_refused_and_resume_takes_previous(tmp_path):
    cfg = {
        "model": {"name": "i3d_r50", "width": 4, "stage_blocks": [1, 1, 1, 1]},
        "data": {"kind": "random", "num_videos": 4, "num_classes": 3, "frames": 2, "size": 32},
        "train": {"iterations": 4, "batch_size": 2, "batch_per_device": 2, "base_batch": 2, "checkpoint_period": 2,
                  "num_workers": 0, "device": "cpu", "tensorboard": False, "progress": False},
        "eval": {"split": None},
    }
    run = tmp_path / "run"
    train(cfg, ["train.iterations=2"], run_dir=run)
    train(cfg, run_dir=run, resume=True, allow_config_change=True)  # continues 2 -> 4
    (_, first), (_, last) = list_checkpoints(run)
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"ckpt_0000004\.pt.*truncated or corrupt"):
        load_checkpoint(last)
    warnings = []
    path, state = latest_checkpoint(run, warn=warnings.append)
    assert path == first and state["iteration"] == 2
    assert "ckpt_0000004.pt" in warnings[0]
    # redoes iterations 3-4 from the good checkpoint, saved when the run was planned for 2 iterations
    out = train(cfg, run_dir=run, resume=True, allow_config_change=True)
    assert out["iteration"] == 4 and load_checkpoint(last)["iteration"] == 4


def test_mismatch_lists_keys_and_models(tmp_path):
    path = tmp_path / "joint.pt"
    save_checkpoint(path, {"iteration": 1, "variant": "joint_gcn_r50", "num_classes": 3,
                           "model": small("joint_gcn_r50").state_dict()})
    state = load_checkpoint(path)
    with pytest.raises(CheckpointError) as e:
        load_model_state(small("joint_gcn_r50", num_classes=5), state, path)
    msg = str(e.value)
    assert "joint_gcn_r50 with 3 classes" in msg and "joint_gcn_r50 with 5 classes" in msg
    assert "classifier.weight: checkpoint (3, 16) vs model (5, 16)" in msg
    with pytest.raises(CheckpointError) as e:
        load_model_state(small("i3d_r50"), state, path)
    msg = str(e.value)
    assert re.search(r"\d+ not in the model \(graph_head \d+, reduce 2\)", msg) and "graph_head.sim" in msg
    with pytest.raises(CheckpointError, match="needs the whole backbone"):
        load_for_stage(build_model("joint_gcn_r50", num_classes=3, width=8, stage_blocks=(1, 1, 1, 1)),
                       state, "graph", path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")


def test_graph_stage_takes_only_the_i3d_part():
    """Section 6.1: in stage `graph` the head starts fresh even when the checkpoint has one that fits."""
    from strg.engine.checkpoint import load_for_stage
    from strg.models import build_model

    small = dict(width=4, stage_blocks=(1, 1, 1, 1), dim=8)
    torch.manual_seed(0)
    other = build_model("joint_gcn_r50", num_classes=3, **small)  # another graph run, same shapes
    for p in other.parameters():
        torch.nn.init.normal_(p)
    torch.manual_seed(1)
    model = build_model("joint_gcn_r50", num_classes=3, **small)
    head_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("graph_head.", "classifier."))}
    report = load_for_stage(model, {"model": other.state_dict()}, "graph")
    state = model.state_dict()
    assert all(k.startswith(("backbone.", "reduce.")) for k in report["loaded"])
    assert torch.equal(state["backbone.conv1.weight"], other.state_dict()["backbone.conv1.weight"])
    assert all(torch.equal(state[k], v) for k, v in head_before.items())
