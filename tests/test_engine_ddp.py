"""2 CPU processes (torchrun, Gloo) end with the same weights as 1 process with the same global batch
(dropout on: its masks are keyed to the sample, not to the process);
a training process killed with SIGKILL resumes from its last checkpoint to the same weights."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from strg.engine import train
from strg.engine.checkpoint import list_checkpoints, load_checkpoint

CFG = {
    "model": {"name": "joint_gcn_r50", "width": 4, "stage_blocks": [1, 1, 1, 1], "dim": 8, "gcn_layers": 1,
              "dropout": 0.5},
    "data": {"kind": "random", "num_videos": 8, "num_classes": 3, "frames": 2, "size": 32, "boxes_per_frame": 2,
             "multi_label": True, "test_clips": 2},
    "train": {"iterations": 4, "batch_size": 4, "batch_per_device": 2, "base_lr": 0.2, "base_batch": 4,
              "checkpoint_period": 2, "num_workers": 0, "device": "cpu", "tensorboard": False, "progress": False,
              "log_period": 2},
    "eval": {"split": "val", "batch_per_device": 2, "num_workers": 0},
}


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _final(run):
    return load_checkpoint(list_checkpoints(run)[-1][1])


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    torch.set_num_threads(1)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(CFG))
    one = train(cfg_path, run_dir=tmp_path / "one")  # 1 process, 2 micro-batches of 2 clips

    # 2 processes x 2 micro-batches of 1 clip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "strg.cli",
           "train", str(cfg_path), "train.batch_per_device=1", "--run-dir", str(tmp_path / "two")]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]

    a, b = _final(tmp_path / "one"), _final(tmp_path / "two")
    assert a["iteration"] == b["iteration"] == 4
    assert len(b["rng"]) == 2  # the RNG states of both ranks are kept
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    moved = [k for k, v in a["model"].items() if k.startswith("graph_head") and v.abs().sum() > 0]
    assert moved  # training changed the graph head (its W starts at 0)
    # metrics gathered from both ranks: every validation video scored once
    lines = (tmp_path / "two" / "predictions_val.txt").read_text().splitlines()
    assert len(lines) == 8
    assert '"mAP"' in proc.stdout and abs(float(proc.stdout.split('"mAP": ')[1].split(",")[0]) - one["mAP"]) < 1e-4


@pytest.mark.slow
def test_killed_process_resumes_to_same_weights(tmp_path):
    torch.set_num_threads(1)
    cfg = dict(CFG, train=dict(CFG["train"], iterations=12, checkpoint_period=2, batch_per_device=1),
               eval={"split": None})
    cfg["model"] = dict(CFG["model"], dropout=0.5)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    train(cfg_path, run_dir=tmp_path / "ref")

    cmd = [sys.executable, "-m", "strg.cli", "train", str(cfg_path), "--run-dir", str(tmp_path / "cut")]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while time.time() < deadline and not any(it >= 4 for it, _ in list_checkpoints(tmp_path / "cut")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = [it for it, _ in list_checkpoints(tmp_path / "cut")]
    assert done and max(done) < 12, done  # killed before the end

    resume = subprocess.run(cmd + ["--resume"], env=_env(), capture_output=True, text=True, timeout=240)
    assert resume.returncode == 0, resume.stderr[-3000:]
    a, b = _final(tmp_path / "ref"), _final(tmp_path / "cut")
    assert b["iteration"] == 12
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=0, atol=0, msg=k)
