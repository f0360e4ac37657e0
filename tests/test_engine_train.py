"""The training loop on tiny synthetic data: schedule, resume equality, NaN stop, stages, run folder."""

import json
import math

import pytest
import torch

from strg.data import build_dataset
from strg.engine import TrainingDiverged, lr_at, train
from strg.engine.checkpoint import list_checkpoints, load_checkpoint
from strg.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny(name="joint_gcn_r50", **train):
    return {
        "model": {"name": name, "width": 4, "stage_blocks": [1, 1, 1, 1], "dim": 8, "gcn_layers": 1},
        "data": {"kind": "random", "num_videos": 8, "num_classes": 3, "frames": 2, "size": 32, "boxes_per_frame": 2},
        "train": {"iterations": 6, "batch_size": 2, "batch_per_device": 1, "base_lr": 0.05, "base_batch": 2,
                  "checkpoint_period": 3, "log_period": 2, "num_workers": 0, "device": "cpu",
                  "tensorboard": False, "progress": False, **train},
        "eval": {"split": None},
    }


def weights(run_dir):
    return load_checkpoint(list_checkpoints(run_dir)[-1][1])["model"]


def test_lr_schedule():
    kw = dict(lr=0.01, iterations=100, decay_at=0.9, decay=0.1, warmup_iters=0, warmup_factor=0.1)
    assert lr_at(0, **kw) == 0.01 and lr_at(89, **kw) == 0.01
    assert lr_at(90, **kw) == pytest.approx(0.001) and lr_at(99, **kw) == pytest.approx(0.001)
    kw["warmup_iters"] = 10
    assert lr_at(0, **kw) == pytest.approx(0.001) and lr_at(5, **kw) == pytest.approx(0.0055)
    assert lr_at(10, **kw) == 0.01


def test_run_folder_and_linear_lr_scaling(tmp_path):
    run = tmp_path / "run"
    cfg = tiny(iterations=4, batch_size=4, batch_per_device=2, base_batch=2, base_lr=0.01, lr_decay_at=0.5)
    cfg["eval"] = {"split": "val", "batch_per_device": 4, "num_workers": 0}
    cfg["train"]["tensorboard"] = True
    out = train(cfg, run_dir=run)
    assert out["iteration"] == 4 and math.isfinite(out["train_loss"])
    assert 0.0 <= out["top1"] <= out["top5"] <= 1.0 and out["num_videos"] == 8 and out["num_clips"] == 16
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    assert [r["iteration"] for r in train_records] == [2, 4]
    # lr scaled by batch 4 / base batch 2; x0.1 from half of the run on (lr_decay_at 0.5)
    assert train_records[0]["lr"] == pytest.approx(0.02) and train_records[1]["lr"] == pytest.approx(0.002)
    assert all(r["clips_per_s"] > 0 for r in train_records)
    assert [r for r in records if r["split"] == "val"][0]["num_videos"] == 8
    assert (run / "config.yaml").is_file() and (run / "log.txt").is_file()
    assert any((run / "tensorboard").iterdir())
    lines = (run / "predictions_val.txt").read_text().splitlines()
    assert len(lines) == 8 and len(lines[0].split()) == 1 + 3
    # a second run into the same folder needs --resume
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg, run_dir=run)


def test_loss_falls_on_learnable_data(tmp_path):
    cfg = tiny("i3d_r50", iterations=30, batch_size=4, base_batch=4, base_lr=0.2, log_period=10, checkpoint_period=30)
    cfg["model"]["dropout"] = 0.0
    train(cfg, run_dir=tmp_path / "run")
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0] * 0.8


class Interrupting(torch.utils.data.Dataset):
    """Wraps a dataset; raises KeyboardInterrupt on the n-th item read (Ctrl-C during data loading)."""

    def __init__(self, base, at: int):
        self.base, self.at, self.reads = base, at, 0
        self.classes, self.multi_label, self.videos = base.classes, base.multi_label, base.videos
        self.max_boxes = base.max_boxes

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        self.reads += 1
        if self.reads == self.at:
            raise KeyboardInterrupt
        return self.base[i]


@pytest.mark.parametrize("multi_label", [False, True])
def test_interrupt_and_resume_equals_uninterrupted(tmp_path, multi_label):
    cfg = tiny(iterations=7, batch_size=4, batch_per_device=2, checkpoint_period=3)  # 2 accumulation steps
    cfg["data"]["multi_label"] = multi_label  # BCE for multi-label, CE otherwise
    cfg["model"]["dropout"] = 0.5  # dropout draws from the RNG: its state must be restored
    ref = train(cfg, run_dir=tmp_path / "ref")

    data = build_dataset("random", split="train", training=True, num_videos=8, num_classes=3, frames=2, size=32,
                                boxes_per_frame=2, multi_label=multi_label)
    # 2 items per micro-batch, 2 micro-batches per iteration: read 19 is inside iteration 5
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run_dir=tmp_path / "cut", train_set=Interrupting(data, at=19))
    assert [it for it, _ in list_checkpoints(tmp_path / "cut")] == [3, 4]  # periodic 3, Ctrl-C at 4
    out = train(cfg, run_dir=tmp_path / "cut", resume=True)
    assert out["iteration"] == 7
    a, b = weights(tmp_path / "ref"), weights(tmp_path / "cut")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert out["train_loss"] == ref["train_loss"]


class Poisoned(Interrupting):
    def __getitem__(self, i):
        item = dict(self.base[i])
        self.reads += 1
        if self.reads >= self.at:
            item["clip"] = torch.full_like(item["clip"], float("nan"))
        return item


def test_nan_loss_stops_naming_iteration_and_checkpoint(tmp_path):
    data = build_dataset("random", split="train", training=True, num_videos=8, num_classes=3, frames=2, size=32,
                         boxes_per_frame=2)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"at iteration 5.*ckpt_0000003\.pt"):
        train(tiny(), run_dir=run, train_set=Poisoned(data, at=9))  # 2 reads per iteration
    state = load_checkpoint(list_checkpoints(run)[-1][1])
    assert state["iteration"] == 3 and all(torch.isfinite(v).all() for v in state["model"].values()
                                           if v.is_floating_point())


def test_stagewise_training(tmp_path):
    base = tiny("i3d_r50", iterations=3)
    base["model"]["frozen_bn"] = False  # BatchNorm statistics would move if the I3D part were not fixed
    train(base, run_dir=tmp_path / "backbone")
    i3d = weights(tmp_path / "backbone")
    assert any("running_mean" in k and v.abs().sum() > 0 for k, v in i3d.items())  # statistics were learnt

    graph = tiny("joint_gcn_r50", iterations=3, stage="graph", init=str(tmp_path / "backbone"))
    graph["model"]["frozen_bn"] = False
    train(graph, run_dir=tmp_path / "graph")
    g = load_checkpoint(list_checkpoints(tmp_path / "graph")[-1][1])
    for k, v in i3d.items():
        if k.startswith("backbone."):  # loaded and fixed (weights and BN statistics): unchanged
            torch.testing.assert_close(g["model"][k], v, rtol=0, atol=0)
    assert all(name.startswith("backbone.") for name in g["frozen"]) and g["frozen"]
    log = (tmp_path / "graph" / "log.txt").read_text()
    assert "stage graph" in log and "left at init" in log and "classifier" in log

    joint = tiny("joint_gcn_r50", iterations=2, stage="joint", init=str(tmp_path / "graph"), base_lr=0.5)
    joint["model"]["frozen_bn"] = False
    train(joint, run_dir=tmp_path / "joint")
    j = weights(tmp_path / "joint")
    changed = [k for k in j
               if k.startswith("backbone.") and j[k].is_floating_point() and not torch.equal(j[k], g["model"][k])]
    assert changed  # the joint stage trains the backbone again

    with pytest.raises(ConfigError, match="train.init is required"):
        train(tiny("joint_gcn_r50", stage="graph"), run_dir=tmp_path / "noinit")
    # a setting without weights that the backbone run had otherwise (pool2 kernel 3 there): refused
    other = tiny("joint_gcn_r50", iterations=1, stage="graph", init=str(tmp_path / "backbone"))
    other["model"].update(frozen_bn=False, pool2_kernel=2)
    with pytest.raises(ConfigError, match=r"other backbone settings \(model.pool2_kernel: 3 there, 2 here\)"):
        train(other, run_dir=tmp_path / "other")
    again = tiny("i3d_r50", iterations=1, init=str(tmp_path / "backbone"))  # a backbone stage may change them: told
    again["model"].update(frozen_bn=False, pool2_kernel=2)
    train(again, run_dir=tmp_path / "again")
    assert "model.pool2_kernel: 3 there, 2 here): this run changes them" in (tmp_path / "again" / "log.txt").read_text()
    from strg.engine import evaluate  # the same check when a checkpoint is evaluated

    other["eval"] = {"split": "val"}
    with pytest.raises(ConfigError, match=r"the checkpoint .* other backbone settings \(model.pool2_kernel"):
        evaluate(other, checkpoint=str(tmp_path / "joint"))


def test_cli_trains_the_tiny_config(tmp_path, capsys):
    from pathlib import Path

    from strg.cli import main

    tiny_cfg = Path(__file__).resolve().parents[1] / "configs" / "tiny_cpu.yaml"
    run = tmp_path / "tiny"
    assert main(["train", str(tiny_cfg), "train.iterations=2", "train.progress=false", "eval.max_videos=2",
                 "--run-dir", str(run)]) == 0
    final = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert final["iteration"] == 2 and final["num_videos"] == 2 and final["checkpoint"].endswith("ckpt_0000002.pt")
    longer = ["train", str(tiny_cfg), "train.iterations=3", "train.progress=false", "eval.split=null",
              "--run-dir", str(run), "--resume"]
    saved = (run / "config.yaml").read_text()
    assert main(longer) == 2  # a changed schedule needs --allow-config-change
    assert "train.iterations: 2 -> 3" in capsys.readouterr().err and (run / "config.yaml").read_text() == saved
    assert main(longer + ["--allow-config-change"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.strip().splitlines()[-1])["iteration"] == 3
    log = (run / "log.txt").read_text()
    assert "settings changed since: " in log and "train.iterations: 2 -> 3" in log
    assert "iterations: 3" in (run / "config.yaml").read_text()


def test_init_2d_and_backbone_checkpoint_together_are_refused(tmp_path):
    cfg = tiny(init_2d="torchvision")
    cfg["model"]["backbone_checkpoint"] = str(tmp_path / "kinetics_i3d.pyth")
    with pytest.raises(ConfigError, match="init_2d would overwrite"):
        train(cfg, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written


class Jittered(Interrupting):
    """Random augmentation: another clip at every read."""

    def __getitem__(self, i):
        item = dict(self.base[i])
        item["clip"] = item["clip"] + torch.rand(())
        return item


def test_cache_features_trains_the_graph_stage_as_without(tmp_path):
    """Stage graph on the cached output of the frozen backbone: the same weights as running it."""
    base = tiny("i3d_r50", iterations=3)
    base["model"]["frozen_bn"] = False  # the cache must see the I3D in eval mode, as training does
    train(base, run_dir=tmp_path / "backbone")
    out = {}
    for cache in (False, True):
        cfg = tiny("joint_gcn_r50", iterations=4, stage="graph", init=str(tmp_path / "backbone"), base_lr=0.5,
                   cache_features=cache, cache_dir=str(tmp_path / "cache") if cache else None)
        cfg["model"]["frozen_bn"] = False
        out[cache] = train(cfg, run_dir=tmp_path / f"graph_{cache}")
    plain, cached = weights(tmp_path / "graph_False"), weights(tmp_path / "graph_True")
    moved = [k for k in plain
             if k.startswith(("graph_head.sim.weights", "graph_head.st.w_front")) and plain[k].abs().sum() > 0]
    assert moved  # the graph-conv weights (zero at init) were trained, so the comparison means something
    for k in plain:
        torch.testing.assert_close(cached[k], plain[k], rtol=1e-4, atol=1e-6)
    assert out[True]["train_loss"] == pytest.approx(out[False]["train_loss"], rel=1e-4)
    files = list((tmp_path / "cache").glob("features-*.pt"))
    assert len(files) == 1
    log_text = (tmp_path / "graph_True" / "log.txt").read_text()
    assert "train.cache_features: the backbone's output of 8 training clips" in log_text

    # a second run with the same backbone and data reuses the saved cache
    cfg = tiny("joint_gcn_r50", iterations=1, stage="graph", init=str(tmp_path / "backbone"), cache_features=True,
               cache_dir=str(tmp_path / "cache"))
    cfg["model"]["frozen_bn"] = False
    train(cfg, run_dir=tmp_path / "again")
    assert f"from {files[0]}" in (tmp_path / "again" / "log.txt").read_text()

    # refused: another stage, random augmentation
    with pytest.raises(ConfigError, match="needs stage 'graph'"):
        train(tiny(cache_features=True), run_dir=tmp_path / "backbone_stage")
    data = build_dataset("random", split="train", training=True, num_videos=8, num_classes=3, frames=2, size=32,
                         boxes_per_frame=2)
    cfg = tiny("joint_gcn_r50", iterations=1, stage="graph", init=str(tmp_path / "backbone"), cache_features=True)
    cfg["model"]["frozen_bn"] = False
    with pytest.raises(ConfigError, match="same every time"):
        train(cfg, run_dir=tmp_path / "jitter", train_set=Jittered(data, at=10**9))


@pytest.mark.slow
def test_tiny_config_longer_run_stays_finite_and_learns(tmp_path):
    """configs/tiny_cpu.yaml with more iterations (its documented use): finite loss all the way,
    and what it learns on train holds on val (the class colours are shared by the splits)."""
    from pathlib import Path

    tiny_cfg = Path(__file__).resolve().parents[1] / "configs" / "tiny_cpu.yaml"
    run = tmp_path / "long"
    out = train(tiny_cfg, ["train.iterations=300", "train.checkpoint_period=300", "train.progress=false"], run_dir=run)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["split"] == "train"]
    assert len(losses) == 60 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    assert out["top1"] >= 0.75  # 4 classes: chance is 0.25
    assert "frozen BatchNorm" not in (run / "log.txt").read_text()


def test_frozen_bn_from_scratch_is_warned(tmp_path):
    run = tmp_path / "run"
    train(tiny(iterations=1), run_dir=run)  # frozen_bn (the paper's default), no pretrained weights
    assert "warning: the backbone starts from random weights with frozen BatchNorm" in (run / "log.txt").read_text()


def test_library_reports_reach_the_terminal_and_the_run_log(tmp_path, capsys):
    """`strg train` configures logging: build_model's weight report shows in the terminal and log.txt."""
    import yaml

    from strg.cli import main
    from strg.models import build_model

    kinetics = tmp_path / "i3d.pth"  # an I3D backbone's state dict (strg's keys): one of the I3D formats
    backbone = build_model("i3d_r50", num_classes=3, width=4, stage_blocks=(1, 1, 1, 1)).backbone
    torch.save(backbone.state_dict(), kinetics)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny("i3d_r50", iterations=1)))
    capsys.readouterr()
    assert main(["train", str(path), f"model.backbone_checkpoint={kinetics}", "--run-dir", str(tmp_path / "k")]) == 0
    report = f"{kinetics}: strg I3D loaded"
    assert report in capsys.readouterr().err
    assert report in (tmp_path / "k" / "log.txt").read_text()


def test_starting_weights_only_for_a_run_that_starts_from_them(tmp_path):
    """model.inflate_from is read by a fresh run, not by one that loads a checkpoint (train.init,
    --resume, evaluation), which replaces those weights: a file no longer there does not matter."""
    from strg.engine import evaluate
    from strg.errors import CheckpointError

    gone = str(tmp_path / "gone.pth")
    fresh = tiny("i3d_r50", iterations=1)
    fresh["model"]["inflate_from"] = gone
    with pytest.raises(CheckpointError, match="no such weights file"):
        train(fresh, run_dir=tmp_path / "fresh")
    train(tiny("i3d_r50", iterations=1), run_dir=tmp_path / "i3d")
    graph = tiny("joint_gcn_r50", iterations=1, stage="graph", init=str(tmp_path / "i3d"))
    graph["model"]["inflate_from"] = gone
    train(graph, run_dir=tmp_path / "graph")
    graph["train"]["iterations"] = 2
    assert train(graph, run_dir=tmp_path / "graph", resume=True, allow_config_change=True)["iteration"] == 2
    graph["eval"] = {"split": "val", "num_workers": 0}
    assert evaluate(graph, checkpoint=tmp_path / "graph")["num_videos"] == 8


def test_mixed_precision(tmp_path):
    """train.amp: the forward runs under bf16 / fp16 autocast (fp16 with a gradient scaler, whose
    state the checkpoint keeps for --resume); none: fp32."""
    out = {amp: train(tiny(iterations=2, amp=amp), run_dir=tmp_path / amp) for amp in ("none", "bf16", "fp16")}
    for amp in ("bf16", "fp16"):
        assert f"amp {amp}" in (tmp_path / amp / "log.txt").read_text()
        assert out[amp]["train_loss"] != out["none"]["train_loss"]  # computed in lower precision ...
        assert out[amp]["train_loss"] == pytest.approx(out["none"]["train_loss"], rel=0.1)  # ... of the same model
    assert weights(tmp_path / "bf16")["classifier.weight"].dtype == torch.float32  # the weights stay fp32
    assert load_checkpoint(list_checkpoints(tmp_path / "fp16")[-1][1])["scaler"]["scale"] > 0
    assert load_checkpoint(list_checkpoints(tmp_path / "none")[-1][1])["scaler"] == {}
