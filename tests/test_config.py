"""Configs: defaults, overrides, validation errors naming the key, base files, saving."""

from pathlib import Path

import pytest
import yaml

from strg.cli import main
from strg.config import TrainConfig, load_config, parse_override, save_config
from strg.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
TINY = {"model": {"name": "i3d_r50", "width": 4, "stage_blocks": [1, 1, 1, 1]}, "data": {"kind": "random"}}


def test_defaults_are_the_papers():
    cfg = load_config(TINY)
    t = cfg.train
    assert (t.base_lr, t.batch_size, t.iterations, t.lr_decay_at, t.lr_decay) == (0.00125, 8, 100_000, 0.9, 0.1)
    assert cfg.eval.combine == "max"
    assert cfg.model.dropout == 0.3 and list(cfg.model.stage_blocks) == [1, 1, 1, 1]
    assert cfg.data.options.num_videos == 16  # a default of the random dataset builder


def test_overrides_are_yaml_scalars():
    cfg = load_config(TINY, ["train.base_lr=1e-3", "model.stage_blocks=[2,2,2,2]", "train.init=null", "train.amp=bf16",
                             "data.multi_label=true"])
    assert cfg.train.base_lr == pytest.approx(1e-3) and isinstance(cfg.train.base_lr, float)
    assert list(cfg.model.stage_blocks) == [2, 2, 2, 2]
    assert cfg.train.init is None and cfg.train.amp == "bf16" and cfg.data.options.multi_label is True
    assert parse_override("train.iterations=7") == (["train", "iterations"], 7)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["train.learning_rate=0.1"], r"unknown key train\.learning_rate"),
        (["model.depth=50"], r"unknown key model\.depth.*build_model"),
        (["data.fps=6"], r"unknown key data\.fps.*'random' dataset"),
        (["train.iterations=ten"], r"train\.iterations: expected int, got 'ten'"),
        (["train.iterations=1.5"], r"train\.iterations: expected int"),
        (["train.amp=fp8"], r"train\.amp: must be one of"),
        (["model.stage_blocks=3"], r"model\.stage_blocks"),
        (["model.frozen_bn=maybe"], r"model\.frozen_bn: expected bool"),
        (["optim.lr=1"], r"unknown section 'optim'"),
        (["train.iterations"], r"expected KEY=VALUE"),
        (["iterations=5"], r"section\.name"),
        (["train.batch_size=6", "train.batch_per_device=4"], r"multiple of train\.batch_per_device"),
        (["train.iterations=0"], r"train\.iterations must be positive"),
        (["model.name=gcn_r50"], r"model\.name: unknown variant 'gcn_r50'"),
    ],
)
def test_errors_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(TINY, overrides)


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: i3d_r50}\ndata: {kind: random}\ntrian: {}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown section 'trian'"):
        load_config(bad)
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad.write_text("data: {kind: random}\n")
    with pytest.raises(ConfigError, match=r"model\.name is required"):
        load_config(bad)
    bad.write_text("model: {name: i3d_r50}\ndata: {kind: kinetics}\n")
    with pytest.raises(ConfigError, match="kinetics"):
        load_config(bad)


def test_base_file_and_save_round_trip(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({**TINY, "train": {"iterations": 5, "seed": 3}}))
    child = tmp_path / "child.yaml"
    child.write_text("base: base.yaml\ntrain: {iterations: 9}\nmodel: {name: joint_gcn_r50}\n")
    cfg = load_config(child)
    assert cfg.train.iterations == 9 and cfg.train.seed == 3
    assert cfg.model.name == "joint_gcn_r50" and cfg.model.width == 4
    saved = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(saved) == cfg


def test_train_config_fields_documented():
    doc = (REPO / "docs" / "engine.md").read_text()
    for name in TrainConfig.__dataclass_fields__:
        assert f"`{name}`" in doc, name


def test_every_shipped_config_validates():
    configs = sorted((REPO / "configs").rglob("*.yaml"))
    assert len(configs) >= 29  # 18 Charades + 10 Something-Something + tiny
    stems = [p.stem for p in configs]
    assert len(set(stems)) == len(stems)  # default run folders runs/<stem> do not collide
    for path in configs:
        cfg = load_config(path)
        if cfg.train.stage == "joint":  # section 6.1: 30K iterations of 8 clips at the reduced rate
            t = cfg.train
            assert t.iterations * t.batch_size == 30000 * 8 and t.base_lr == pytest.approx(0.000125)
            assert t.base_batch == 8
        if cfg.data.kind == "charades":
            assert cfg.data.options.test_clips == 10 and cfg.data.options.max_boxes == 50
        if cfg.data.kind.startswith("something"):
            assert cfg.data.options.test_clips == 2 and cfg.data.options.max_boxes == 10


def test_cli_reports_config_error(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    assert main(["train", str(cfg), "train.momentum=fast", "--run-dir", str(tmp_path / "run")]) == 2
    assert "train.momentum" in capsys.readouterr().err


def test_model_section_is_build_models_keywords():
    """ModelConfig declares the model section without importing the models: it must stay the
    keyword arguments of build_model, with the same defaults."""
    import dataclasses
    import inspect

    from strg.config import ModelConfig
    from strg.models import build_model

    params = {n: p for n, p in inspect.signature(build_model).parameters.items() if n not in ("name", "num_classes")}
    fields = {f.name: f for f in dataclasses.fields(ModelConfig) if f.name not in ("name", "num_classes")}
    assert list(fields) == list(params)
    for name, p in params.items():
        assert fields[name].default == p.default, name


def test_model_names_are_the_registrys():
    from strg.models import build_model
    from strg.variants import list_models

    for name in list_models():
        load_config({**TINY, "model": {"name": name}})
    model = build_model("nl_st_gcn_r101", num_classes=2, width=4, stage_blocks=(1, 1, 1, 1), dim=8)
    assert model.variant == "nl_st_gcn_r101"


def test_train_init_2d_is_read_as_model_inflate_from(caplog):
    """Old configs: train.init_2d was a second way to name the ImageNet weights."""
    cfg = load_config(TINY, ["train.init_2d=resnet50.pth"])
    assert cfg.model.inflate_from == "resnet50.pth" and "init_2d" not in cfg.to_dict()["train"]
    assert "train.init_2d is now model.inflate_from" in caplog.text
    assert load_config(TINY, ["train.init_2d=null"]).model.inflate_from is None
    with pytest.raises(ConfigError, match="init_2d would overwrite.*model.inflate_from"):
        load_config(TINY, ["train.init_2d=torchvision", "model.inflate_from=resnet50.pth"])
    with pytest.raises(ConfigError, match="inflate_from and model.backbone_checkpoint are both set"):
        load_config(TINY, ["model.inflate_from=a.pth", "model.backbone_checkpoint=b.pyth"])
