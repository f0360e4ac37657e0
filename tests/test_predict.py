"""`strg predict`: the same scores as `strg eval`, timelines of long videos, the streamed frames,
the graph picture, and every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from strg.cli import main
from strg.data.decode import open_video
from strg.data.sampling import clip_indices, clip_span
from strg.data.stream import WindowStream
from strg.data.testing import index_frames, write_video
from strg.predict import collect_videos, load_predictor, plan_windows, predict_videos

TINY_MODEL = {"width": 4, "stage_blocks": [1, 1, 1, 1], "dim": 8, "gcn_layers": 1}


def _config(root: str, head: str, **data) -> dict:
    return {
        "model": {"name": f"{head}_r50", **TINY_MODEL},
        "data": {"kind": "something_v2", "root": root, "proposals": str(Path(root) / "proposals.sqlite"),
                 "num_frames": 8, "stride": 2.0, "stride_unit": "frames", "train_short_side": [32, 32],
                 "crop_size": 32, "test_short_side": 32, "test_clips": 2, "max_boxes": 4, "flip": False, **data},
        "train": {"iterations": 2, "batch_size": 2, "batch_per_device": 2, "base_lr": 0.01, "device": "cpu",
                  "num_workers": 0, "tensorboard": False, "progress": False, "log_period": 1},
        "eval": {"split": None, "batch_per_device": 3, "num_workers": 0},
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Synthetic Something-Something data (20 videos of 16 frames, 32 px) and two runs trained
    for 2 iterations: Joint GCN and the I3D baseline."""
    from strg.engine import train
    from strg.synth import generate_dataset

    base = tmp_path_factory.mktemp("predict")
    root = base / "data"
    generate_dataset(root, seed=0, num_videos=20, frames=16, size=32, workers=1, progress=False)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for head in ("joint_gcn", "i3d"):
            train(_config(str(root), head), run_dir=base / head)
    finally:
        torch.set_num_threads(n)
    val = json.loads((root / "labels" / "something-something-v2-validation.json").read_text())
    videos = [str(root / "20bn-something-something-v2" / f"{v['id']}.webm") for v in val]
    return {"base": base, "root": root, "joint": base / "joint_gcn", "i3d": base / "i3d", "val": videos}


def test_predict_equals_eval(tiny, tmp_path, one_thread):
    """Same videos, clips and checkpoint: the video scores of `strg predict` are those of `strg eval`."""
    from strg.engine import evaluate
    from strg.metrics import read_submission

    evaluate(tiny["joint"] / "config.yaml", checkpoint=tiny["joint"], overrides=["eval.split=val"],
             predictions=tmp_path / "eval.txt")
    ids, expected = read_submission(tmp_path / "eval.txt")
    pred = load_predictor(tiny["joint"], proposals=str(tiny["root"] / "proposals.sqlite"))
    results = list(predict_videos(pred, collect_videos(tiny["val"]), batch_size=5))
    assert [r.video_id for r in results] == ids and all(r.error is None for r in results)
    got = np.stack([r.video_scores for r in results])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    assert all(r.mode == "clips" and r.scores.shape[:2] == (2, 1) for r in results)  # data.test_clips = 2

    # the command: one JSON line per video, its top-k in the order of the eval's scores
    out = tmp_path / "out"
    assert main(["predict", str(tiny["joint"]), *tiny["val"][:2], "--proposals", str(tiny["root"] / "proposals.sqlite"),
                 "--out", str(out), "--top-k", "3", "--quiet"]) == 0
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["video_id"] for r in records] == ids[:2]
    for rec, row in zip(records, expected[:2]):
        assert [c["score"] for c in rec["top_k"]] == pytest.approx(sorted(row, reverse=True)[:3], rel=1e-4)
        assert rec["duration"] == pytest.approx(16 / 12, abs=1e-3) and rec["clips"] == 2 and rec["mode"] == "clips"


def test_baseline_without_boxes_and_boxes_model_without(tiny, tmp_path, capsys, one_thread):
    out = tmp_path / "out"
    assert main(["predict", str(tiny["i3d"]), tiny["val"][0], "--no-boxes", "--out", str(out), "--quiet"]) == 0
    assert "top_k" in json.loads((out / "predictions.jsonl").read_text())
    capsys.readouterr()
    assert main(["predict", str(tiny["joint"]), tiny["val"][0], "--no-boxes", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "joint_gcn_r50" in err and "without boxes" in err and "ckpt_" in err
    # no store, no detector weights on this machine: says what to give
    empty_hub = tmp_path / "hub"
    torch.hub.set_dir(str(empty_hub))
    try:
        assert main(["predict", str(tiny["joint"]), tiny["val"][0], "--out", str(out)]) == 2
    finally:
        torch.hub.set_dir(str(Path.home() / ".cache" / "torch" / "hub"))
    err = capsys.readouterr().err
    assert "--proposals" in err and "--detector-weights" in err and "fasterrcnn_resnet50_fpn" in err
    assert main(["predict", str(tiny["i3d"]), tiny["val"][0], "--explain", "--no-boxes", "--out", str(out)]) == 2
    assert "the I3D baseline has none" in capsys.readouterr().err


def test_detector_on_the_clip_frames(tiny, one_thread):
    """Without a store, the detector sees exactly the frames the clips use, each once."""
    seen = []

    def proposer(frames):  # uint8 (N, H, W, 3) -> one box per frame: the frame's grey level as x1
        seen.append(frames.clone())
        n = frames.shape[0]
        boxes = torch.tensor([2.0, 2.0, 20.0, 20.0]).repeat(n, 3, 1)
        return boxes, torch.ones(n, 3), torch.full((n,), 2)

    pred = load_predictor(tiny["joint"], make_proposer=lambda top_k: proposer)
    video = collect_videos(tiny["val"][:1])
    (res,) = list(predict_videos(pred, video))
    assert res.error is None
    with open_video(tiny["val"][0]) as src:
        plan = plan_windows(src.num_frames, src.fps, num_clip_frames=8, stride=2.0, stride_unit="frames",
                            test_clips=2, long_after=60.0, window_stride=None)
        wanted = np.unique(np.concatenate(plan["windows"]))
        expected = src.get_frames(wanted)
    got = torch.cat(seen)
    assert got.shape[0] == len(wanted)  # each frame once
    assert torch.equal(got.sort(dim=0).values, expected.sort(dim=0).values)


def test_detector_cli_with_random_weights(tiny, tmp_path, one_thread):
    out = tmp_path / "out"
    assert main(["predict", str(tiny["joint"]), tiny["val"][0], "--random-weights", "--min-size", "64",
                 "--out", str(out), "--quiet"]) == 0
    assert len(json.loads((out / "predictions.jsonl").read_text())["top_k"]) == 5


def test_explain_draws_the_best_clip(tiny, tmp_path, one_thread):
    out = tmp_path / "out"
    assert main(["predict", str(tiny["joint"]), tiny["val"][1], "--proposals", str(tiny["root"] / "proposals.sqlite"),
                 "--explain", "--out", str(out), "--quiet"]) == 0
    rec = json.loads((out / "predictions.jsonl").read_text())
    (png,) = rec["files"]
    assert png.endswith(".explain.png") and Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------------------
# A long video whose answer is known: colours


COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


def _colour_frames(colour, n, rng, size=32):
    noise = rng.integers(-20, 21, (n, size, size, 3))
    return np.clip(np.array(colour)[None, None, None] + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory):
    """An I3D (random backbone) whose classifier is fitted by least squares on its features of
    clips of three colours: its answer is the clip's colour. Saved as a run (config + checkpoint)."""
    from strg.config import load_config
    from strg.data.transforms import ClipTransform
    from strg.engine.checkpoint import checkpoint_path, save_checkpoint
    from strg.models import build_model

    base = tmp_path_factory.mktemp("colours")
    classes = list(COLOURS)
    (base / "classes.txt").write_text("\n".join(classes) + "\n")
    cfg = load_config({"model": {"name": "i3d_r50", "width": 4, "stage_blocks": [1, 1, 1, 1]},
                       "data": {"kind": "manifest", "manifest": str(base / "m.csv"),
                                "classes_file": str(base / "classes.txt"),
                                "num_frames": 4, "stride": 2.0, "stride_unit": "frames", "test_clips": 1,
                                "train_short_side": [32, 32], "crop_size": 32, "test_short_side": 32},
                       "train": {"device": "cpu"}, "eval": {}})
    torch.manual_seed(0)
    model = build_model("i3d_r50", num_classes=3, width=4, stage_blocks=(1, 1, 1, 1)).eval()
    transform = ClipTransform(training=False, test_short_side=32, train_short_side=(32, 32), crop_size=32)
    rng = np.random.default_rng(0)
    feats, targets = [], []
    with torch.no_grad():
        for c, colour in enumerate(COLOURS.values()):
            for _ in range(6):
                clip = transform(torch.from_numpy(_colour_frames(colour, 4, rng)), torch.zeros(4, 0, 4),
                                 torch.zeros(4, 0, dtype=torch.bool)).clip
                feats.append(model.forward_features(clip[None])[0])
                targets.append(c)
    x = torch.cat([torch.stack(feats), torch.ones(len(feats), 1)], 1).double()  # (N, F + 1)
    y = 10.0 * torch.nn.functional.one_hot(torch.tensor(targets), 3).double()
    sol = torch.linalg.lstsq(x, y).solution  # (F + 1, 3)
    model.classifier.weight.data = sol[:-1].T.float()
    model.classifier.bias.data = sol[-1].float()
    save_checkpoint(checkpoint_path(base / "run", 1), {"iteration": 1, "model": model.state_dict(),
                                                       "config": cfg.to_dict(),
                                                       "classes": classes, "multi_label": False})
    return base


def test_timeline_of_joined_videos(colour_run, tmp_path, one_thread):
    """Three 3-second videos of one colour each, joined: each class holds its own stretch."""
    rng = np.random.default_rng(1)
    frames = np.concatenate([_colour_frames(c, 36, rng) for c in COLOURS.values()])  # 108 frames at 12 fps = 9 s
    video = write_video(tmp_path / "joined.mp4", frames, fps=12)
    out = tmp_path / "out"
    assert main(["predict", str(colour_run / "run"), video, "--long-after", "5", "--window-stride", "0.5",
                 "--out", str(out), "--quiet"]) == 0
    rec = json.loads((out / "predictions.jsonl").read_text())
    assert rec["mode"] == "timeline" and rec["duration"] == pytest.approx(9.0)
    # clips of 4 frames 2 apart span 7 frames; one every 6 frames, the last ending at frame 107
    assert len(rec["windows"]) == 18 and rec["windows"][-1]["end"] == pytest.approx(9.0)
    for w in rec["windows"]:
        inside = [k for k in range(3) if 3 * k <= w["start"] and w["end"] <= 3 * (k + 1)]
        if inside:  # a clip within one video's stretch: that video's colour
            assert w["top_k"][0]["class"] == list(COLOURS)[inside[0]], w
    csv_path, png = rec["files"]
    table = np.genfromtxt(csv_path, delimiter=",", names=True)
    assert table.dtype.names == ("start", "end", "red", "green", "blue") and len(table) == 18
    best = np.argmax(np.stack([table[c] for c in COLOURS], 1), 1)
    stretches = [table["end"] <= 3, (table["start"] >= 3) & (table["end"] <= 6), table["start"] >= 6]
    assert [int(s.sum()) for s in stretches] == [5, 5, 6]  # clips starting at 0-24, 36-60, 72-101 (frames)
    assert (best[table["end"] <= 3] == 0).all() and (best[(table["start"] >= 3) & (table["end"] <= 6)] == 1).all()
    assert (best[table["start"] >= 6] == 2).all()
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {c["class"] for c in rec["top_k"][:3]} == set(COLOURS)


def test_short_video_and_bad_videos_in_one_run(colour_run, tmp_path, capsys, one_thread):
    rng = np.random.default_rng(2)
    good = write_video(tmp_path / "green.mp4", _colour_frames(COLOURS["green"], 24, rng), fps=12)
    short = write_video(tmp_path / "short.mp4", _colour_frames(COLOURS["blue"], 4, rng), fps=12)  # < the 7-frame clip
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 100)
    out = tmp_path / "out"
    bad = [str(tmp_path / "empty.mp4"), str(tmp_path / "junk.mp4"), str(tmp_path / "missing.mp4")]
    code = main(["predict", str(colour_run / "run"), good, short, *bad, "--out", str(out)])
    assert code == 1  # some videos failed; the others are predicted
    captured = capsys.readouterr()
    records = {Path(r["path"]).name: r for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}
    assert records["green.mp4"]["top_k"][0]["class"] == "green"
    assert records["short.mp4"]["top_k"][0]["class"] == "blue" and records["short.mp4"]["shorter_than_clip"]
    for name in ("empty.mp4", "junk.mp4", "missing.mp4"):
        assert name in records[name]["error"], records[name]
    assert "not found" in records["missing.mp4"]["error"]
    assert "3 videos could not be read" in captured.err and "2 of 5 videos predicted" in captured.out


def test_bad_runs_and_video_lists(colour_run, tmp_path, capsys):
    video = write_video(tmp_path / "v.mp4", _colour_frames(COLOURS["red"], 8, np.random.default_rng(3)), fps=12)
    (tmp_path / "empty_dir").mkdir()
    cases = [
        ([str(colour_run / "run"), str(tmp_path / "empty_dir")], "empty_dir: no video files"),
        ([str(colour_run / "run"), str(tmp_path / "*.avi")], "no file matches"),
        ([str(tmp_path / "nothing"), video], "no such run folder"),
        ([str(tmp_path / "empty_dir"), video], "without checkpoints"),
    ]
    state = tmp_path / "plain.pt"  # weights only: no config, no run folder around it
    torch.save(torch.load(next((colour_run / "run" / "checkpoints").iterdir()), weights_only=True)["model"], state)
    cases.append(([str(state), video], "carries no config"))
    if not torch.cuda.is_available():
        cases.append(([str(colour_run / "run"), video, "--device", "cuda"], "no CUDA GPU"))
    for argv, message in cases:
        assert main(["predict", *argv, "--out", str(tmp_path / "out"), "--quiet"]) == 2, argv
        assert message in capsys.readouterr().err, argv


def test_manifest_and_glob(colour_run, tmp_path, one_thread):
    rng = np.random.default_rng(4)
    for name, colour in COLOURS.items():
        write_video(tmp_path / "vids" / f"{name}.mp4", _colour_frames(colour, 12, rng), fps=12)
    (tmp_path / "list.csv").write_text("path,note\nvids/red.mp4,x\nvids/blue.mp4,y\n")
    assert [v.video_id for v in collect_videos([str(tmp_path / "list.csv")])] == ["red", "blue"]
    assert [v.video_id for v in collect_videos([str(tmp_path / "vids" / "g*.mp4")])] == ["green"]
    assert [v.video_id for v in collect_videos([str(tmp_path / "vids")])] == ["blue", "green", "red"]
    pred = load_predictor(colour_run / "run")
    results = list(predict_videos(pred, collect_videos([str(tmp_path / "vids")]), batch_size=2))
    assert [r.top[0][0] for r in results] == ["blue", "green", "red"]


# ----------------------------------------------------------------------------------------------
# Streaming


@pytest.mark.parametrize("frames", [60, 240])
def test_window_stream_decodes_once_and_holds_a_window(tmp_path, frames):
    path = write_video(tmp_path / "v.mp4", index_frames(frames, 16, 16, step=1), fps=24, gop=12)
    span = clip_span(8, 3.0)  # 22 frames
    windows = [clip_indices(int(s), 8, 3.0, 0, frames - 1) for s in range(0, frames - span + 1, 5)]
    with open_video(path) as src:
        stream = WindowStream(src, windows)
        got = dict(stream)
        for w, idx in enumerate(windows):
            assert torch.equal(got[w], src.get_frames(idx))  # what the datasets decode for the clip
    assert stream.decoded == len(np.unique(np.concatenate(windows)))  # every frame once
    assert span - 5 <= stream.max_held <= span  # one window's frames, whatever the length


def test_plan_windows():
    p = plan_windows(100, 10.0, num_clip_frames=4, stride=1.0, stride_unit="seconds", test_clips=3,
                     long_after=None, window_stride=None)
    assert p["mode"] == "clips" and p["span"] == 31 and p["starts"].tolist() == [12, 34, 58]  # uniform_clip_starts
    p = plan_windows(100, 10.0, num_clip_frames=4, stride=1.0, stride_unit="seconds", test_clips=3,
                     long_after=5.0, window_stride=2.0)
    assert p["mode"] == "timeline" and p["starts"].tolist() == [0, 20, 40, 60, 69]  # the last ends at frame 99
    assert p["windows"][-1].tolist() == [69, 79, 89, 99]
    p = plan_windows(5, 10.0, num_clip_frames=4, stride=1.0, stride_unit="seconds", test_clips=2,
                     long_after=5.0, window_stride=None)
    assert p["short"] and p["windows"][0].tolist() == [0, 4, 4, 4]  # the last frame repeated, as in eval


def test_video_missing_from_the_store(tiny, tmp_path, capsys, one_thread):
    import shutil

    other = tmp_path / "not_in_store.webm"
    shutil.copy(tiny["val"][0], other)
    out = tmp_path / "out"
    assert main(["predict", str(tiny["joint"]), tiny["val"][0], str(other), "--proposals",
                 str(tiny["root"] / "proposals.sqlite"), "--out", str(out), "--quiet"]) == 1
    first, second = map(json.loads, (out / "predictions.jsonl").read_text().splitlines())
    assert "top_k" in first and "proposals.sqlite" in second["error"] and "not_in_store" in second["error"]


def test_progress_on_a_log_is_a_line_every_5_percent(capsys):
    from strg.commands.predict import _Progress

    progress = _Progress(200, enabled=True)  # stderr is not a terminal under pytest
    for _ in range(200):
        progress.update(failed=0)
    progress.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 20 and lines[-1].startswith("predict: 200/200 videos (0 failed)") and "left" in lines[0]


def test_every_kind_of_damaged_video_is_reported_and_the_rest_predicted(colour_run, tmp_path, one_thread):
    import shutil

    from strg.data import corrupt

    rng = np.random.default_rng(5)
    good = write_video(tmp_path / "good.mp4", _colour_frames(COLOURS["red"], 36, rng), fps=12)
    damaged = []
    for name, damage in sorted(corrupt.VIDEO_DAMAGE.items()):
        copy = tmp_path / f"{name.replace('%', 'pc')}.mp4"
        shutil.copy(good, copy)
        damaged.append(str(damage(copy)))
    out = tmp_path / "out"
    assert main(["predict", str(colour_run / "run"), *damaged, good, "--out", str(out), "--quiet"]) == 1
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == len(damaged) + 1
    for rec, path in zip(records, damaged):
        assert path in rec["error"] and "top_k" not in rec, rec
    assert records[-1]["top_k"][0]["class"] == "red"
