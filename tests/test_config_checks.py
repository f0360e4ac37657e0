"""Bad values of a config are ConfigErrors naming the key, before anything is built or written."""

from pathlib import Path

import pytest
import torch

from strg.cli import main
from strg.config import load_config
from strg.engine.distributed import choose_device
from strg.errors import ConfigError
from strg.models import build_model

TINY = str(Path(__file__).resolve().parents[1] / "configs" / "tiny_cpu.yaml")


@pytest.mark.parametrize("override, key", [
    ("model.width=0", "model.width"),
    ("model.width=-4", "model.width"),
    ("model.stage_blocks=[1,1]", "model.stage_blocks"),
    ("model.stage_blocks=[1,0,1,1]", "model.stage_blocks"),
    ("model.dim=-3", "model.dim"),
    ("model.gcn_layers=0", "model.gcn_layers"),
    ("model.dropout=1.5", "model.dropout"),
    ("model.dropout=1.0", "model.dropout"),
    ("model.dropout=-0.1", "model.dropout"),
    ("model.pool2_kernel=0", "model.pool2_kernel"),
    ("model.temporal_strides=[1,1]", "model.temporal_strides"),
    ("model.temporal_strides=[0,1,2]", "model.temporal_strides"),
    ("model.in_channels=0", "model.in_channels"),
    ("model.roi_impl=fast", "model.roi_impl"),
    ("model.num_classes=0", "model.num_classes"),
    ("model.name=joint_gcn_r34", "model.name"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.base_lr=-0.1", "train.base_lr"),
    ("train.num_workers=-1", "train.num_workers"),
    ("train.momentum=-1", "train.momentum"),
    ("train.weight_decay=-1", "train.weight_decay"),
    ("train.grad_clip=0", "train.grad_clip"),
    ("train.lr_decay=0", "train.lr_decay"),
    ("train.warmup_factor=2", "train.warmup_factor"),
    ("train.seed=-1", "train.seed"),
    ("train.device=gpu", "train.device"),
    ("eval.max_videos=0", "eval.max_videos"),
    ("eval.num_workers=-2", "eval.num_workers"),
])
def test_bad_value_names_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(TINY, [override])


def test_build_model_names_the_argument():
    with pytest.raises(ConfigError, match=r"width: must be an integer >= 1, got 0"):
        build_model("i3d_r50", num_classes=3, width=0)
    with pytest.raises(ValueError, match="stage_blocks: must be 4 integers"):  # ConfigError is a ValueError
        build_model("joint_gcn_r50", num_classes=3, stage_blocks=(1, 1))
    build_model("i3d_r50", num_classes=3, width=1, stage_blocks=(1, 1, 1, 1), dropout=0.0)  # the smallest is fine


@pytest.mark.parametrize("override, key", [
    ("data.num_videos=0", "data.num_videos"), ("data.frames=0", "data.frames"), ("data.size=0", "data.size"),
    ("data.num_classes=0", "data.num_classes"), ("data.test_clips=0", "data.test_clips"),
])
def test_cli_random_data_values(override, key, tmp_path, capsys):
    assert main(["train", TINY, override, "--run-dir", str(tmp_path / "run"), "train.progress=false"]) == 2
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err


def test_missing_gpu_is_a_config_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ConfigError, match="train.device is 'cuda' but this machine has no CUDA device"):
        choose_device("cuda")
    assert choose_device("auto") == torch.device("cpu") and choose_device("cpu") == torch.device("cpu")
    assert main(["train", TINY, "train.device=cuda:1", "--run-dir", str(tmp_path / "run")]) == 2
    assert "no CUDA device" in capsys.readouterr().err and not (tmp_path / "run").exists()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"GPU 2\) but this machine has 2 CUDA device"):
        choose_device("cuda:2")


def test_visualize_query_out_of_range(tmp_path, capsys):
    out = tmp_path / "v.png"
    assert main(["visualize", TINY, "--query", "99,0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "query 99,0 is outside the graph: frame 0..1" in err and "Traceback" not in err
    assert main(["visualize", TINY, "--query", "0,7", "--out", str(out)]) == 2
    assert "box 0..2" in capsys.readouterr().err
    assert main(["visualize", TINY, "--query", "middle", "--out", str(out)]) == 2
    assert "expected FRAME,BOX" in capsys.readouterr().err
    assert not out.exists()
