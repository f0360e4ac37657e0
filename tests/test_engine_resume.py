"""--resume: refused when nothing is left to train or the settings changed; nothing written then."""

import json
import math

import pytest
import torch

from test_engine_train import Interrupting  # Ctrl-C at the n-th read

from strg.cli import main
from strg.engine import train
from strg.engine.checkpoint import list_checkpoints, load_checkpoint
from strg.data import build_dataset
from strg.engine.resume import FREE_ON_RESUME, config_differences
from strg.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny(**train_keys):
    return {
        "model": {"name": "i3d_r50", "width": 4, "stage_blocks": [1, 1, 1, 1], "dropout": 0.5},
        "data": {"kind": "random", "num_videos": 8, "num_classes": 3, "frames": 2, "size": 32},
        "train": {"iterations": 4, "batch_size": 2, "batch_per_device": 1, "base_batch": 2, "base_lr": 0.05,
                  "checkpoint_period": 2, "num_workers": 0, "device": "cpu", "tensorboard": False,
                  "progress": False, **train_keys},
        "eval": {"split": None},
    }


def snapshot(run):
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_complete_run_is_refused_and_left_alone(tmp_path):
    run = tmp_path / "run"
    train(tiny(), run_dir=run)
    before = snapshot(run)
    with pytest.raises(ConfigError, match=r"nothing to train: the run is complete .*train.iterations is 4"):
        train(tiny(), run_dir=run, resume=True)
    # fewer iterations than done: refused too, even with the explicit flag (there is nothing to train)
    with pytest.raises(ConfigError, match="train.iterations is below the iteration the run has reached"):
        train(tiny(iterations=2), run_dir=run, resume=True, allow_config_change=True)
    assert snapshot(run) == before  # no config.yaml, log or checkpoint touched


def test_changed_settings_need_the_flag(tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny(iterations=2), run_dir=run)
    before = snapshot(run)
    with pytest.raises(ConfigError) as e:
        train(tiny(iterations=4, base_lr=0.01), run_dir=run, resume=True)
    assert "train.iterations: 2 -> 4" in str(e.value) and "train.base_lr: 0.05 -> 0.01" in str(e.value)
    assert "--allow-config-change" in str(e.value)
    assert snapshot(run) == before

    out = train(tiny(iterations=4, base_lr=0.01), run_dir=run, resume=True, allow_config_change=True)
    assert out["iteration"] == 4 and math.isfinite(out["train_loss"])
    assert "base_lr: 0.01" in (run / "config.yaml").read_text()  # the run's config now says what it continued with
    log = (run / "log.txt").read_text()
    assert "settings changed since: train.iterations: 2 -> 4; train.base_lr: 0.05 -> 0.01" in log

    # the CLI: exit code 2 and the reason, without a traceback
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(json.dumps(tiny(iterations=4)))
    assert main(["train", str(cfg), "--run-dir", str(run), "--resume", "train.iterations=6", "train.seed=3"]) == 2
    err = capsys.readouterr().err
    assert "train.seed: 0 -> 3" in err and "Traceback" not in err
    assert main(["train", str(cfg), "--run-dir", str(tmp_path / "other"), "--allow-config-change"]) == 2
    assert "goes with --resume" in capsys.readouterr().err


def test_interrupted_run_resumes_with_free_settings_changed(tmp_path):
    cfg = tiny(iterations=6)
    ref = train(cfg, run_dir=tmp_path / "ref")
    data = build_dataset("random", split="train", training=True, num_videos=8, num_classes=3, frames=2, size=32)
    with pytest.raises(KeyboardInterrupt):  # 2 reads per iteration: read 7 is in iteration 4
        train(cfg, run_dir=tmp_path / "cut", train_set=Interrupting(data, at=7))
    saved = (tmp_path / "cut" / "config.yaml").read_text()
    # where it is logged and how data is loaded may change: the run trains the same weights
    free = tiny(iterations=6, log_period=1, keep_checkpoints=5, checkpoint_period=1)
    free["eval"] = {"split": None, "num_workers": 1}
    out = train(free, run_dir=tmp_path / "cut", resume=True)
    assert out["iteration"] == 6 and out["train_loss"] == ref["train_loss"]
    a = load_checkpoint(list_checkpoints(tmp_path / "ref")[-1][1])["model"]
    b = load_checkpoint(list_checkpoints(tmp_path / "cut")[-1][1])["model"]
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=k)
    assert (tmp_path / "cut" / "config.yaml").read_text() == saved  # only free keys changed: config.yaml kept


def test_config_differences():
    old = {"model": {"name": "a", "stage_blocks": (1, 1)}, "train": {"iterations": 2, "seed": 0}}
    new = {"model": {"name": "a", "stage_blocks": [1, 1]}, "train": {"iterations": 3, "progress": False}}
    assert config_differences(old, new) == {"train.iterations": (2, 3), "train.progress": ("<unset>", False),
                                            "train.seed": (0, "<unset>")}
    # a key a newer (or older) strg has at None is no change: checkpoints of other versions resume
    old["model"]["backbone_source"], new["train"]["init_2d"] = None, None
    assert "model.backbone_source" not in config_differences(old, new)
    assert "train.init_2d" not in config_differences(old, new)
    old["train"]["init_2d"] = "torchvision"
    assert config_differences(old, new)["train.init_2d"] == ("torchvision", None)
    assert "train.iterations" not in FREE_ON_RESUME and "model.dropout" not in FREE_ON_RESUME
