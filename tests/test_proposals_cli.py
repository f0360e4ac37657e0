"""`strg proposals extract` / `import-something-else` end to end (random detector weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from strg.cli import main
from strg.data.proposals import ProposalStore
from strg.data.testing import index_frames, write_video

FAST = ["--random-weights", "--min-size", "64", "--workers", "0", "--no-progress", "--batch-size", "8"]


@pytest.fixture()
def video_dir(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    write_video(root / "clip_a.mp4", index_frames(12, 32, 48), fps=24)  # 3 frames at 6 fps
    write_video(root / "clip_b.mp4", index_frames(8, 48, 32), fps=12)  # 4 frames at 6 fps
    return root


def test_extract_own_videos_with_a_corrupt_one(video_dir, tmp_path, capsys):
    (video_dir / "broken.mp4").write_bytes(b"not a video at all")
    out = tmp_path / "props.sqlite"
    code = main(["proposals", "extract", "--videos", str(video_dir), "--out", str(out), "--top-k", "5", *FAST])
    captured = capsys.readouterr()
    assert code == 0
    assert "broken" in captured.err and "1 failed" in captured.out
    with ProposalStore(out, "r") as store:
        assert store.keys() == ["clip_a", "clip_b"]
        a, b = store.get("clip_a"), store.get("clip_b")
    assert a["frames"].tolist() == [0, 4, 8] and a["frame_size"] == (32, 48) and a["fps"] == 24.0
    assert b["frames"].tolist() == [0, 2, 4, 6] and b["frame_size"] == (48, 32) and b["fps"] == 12.0
    for rec, (h, w) in [(a, (32, 48)), (b, (48, 32))]:
        assert rec["boxes"].shape[1:] == (5, 4)  # K honoured
        assert (rec["num_boxes"] <= 5).all() and (rec["num_boxes"] > 0).all()
        assert (rec["boxes"][..., 2] <= w).all() and (rec["boxes"][..., 3] <= h).all()


def test_all_videos_failing_exits_non_zero(tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.mp4").write_bytes(b"junk")
    (bad / "y.webm").write_bytes(b"")
    code = main(["proposals", "extract", "--videos", str(bad), "--out", str(tmp_path / "p.sqlite"), *FAST])
    assert code == 1
    err = capsys.readouterr().err
    assert "x:" in err and "y:" in err


def test_usage_errors_are_clear(tmp_path, capsys):
    assert main(["proposals", "extract", "--out", str(tmp_path / "p.sqlite")]) == 2
    assert "--videos" in capsys.readouterr().err
    assert main(["proposals", "extract", "--videos", str(tmp_path / "none.mp4"), "--out", "p.sqlite", *FAST]) == 2
    assert "none.mp4" in capsys.readouterr().err



@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_a_gpu_the_machine_lacks_is_a_clear_error(video_dir, tmp_path, capsys):
    out = tmp_path / "p.sqlite"
    args = ["proposals", "extract", "--videos", str(video_dir), "--out", str(out), *FAST, "--device", "cuda"]
    assert main(args) == 2
    assert "--device is 'cuda' but this machine has no CUDA device" in capsys.readouterr().err
    assert not out.exists()

def test_extract_from_a_config(video_dir, tmp_path):
    (tmp_path / "classes.txt").write_text("a\nb\n")
    for split in ("train", "val"):
        (tmp_path / f"{split}.csv").write_text(
            "path,labels\n" + ("clip_a.mp4,a\n" if split == "train" else "clip_b.mp4,b\n")
        )
    out = tmp_path / "from_config.sqlite"
    config = tmp_path / "cfg.yaml"
    config.write_text(
        "model: {name: joint_gcn_r50}\n"
        f"data:\n  kind: manifest\n  manifest: {tmp_path}/{{split}}.csv\n  classes_file: {tmp_path}/classes.txt\n"
        f"  root: {video_dir}\n  max_boxes: 3\n  proposals: {out}\n"
    )
    assert main(["proposals", "extract", str(config), *FAST]) == 0  # --out from data.proposals
    with ProposalStore(out, "r") as store:
        assert store.keys() == ["clip_a", "clip_b"]
        assert store.get("clip_a")["boxes"].shape[1] == 3  # K from the dataset's max_boxes
    # an override, a split on its own, and resume: nothing new to write
    code = main(["proposals", "extract", str(config), "data.max_boxes=2", "--split", "train",
                 "--out", str(tmp_path / "train_only.sqlite"), *FAST])
    assert code == 0
    with ProposalStore(tmp_path / "train_only.sqlite", "r") as store:
        assert store.keys() == ["clip_a"] and store.get("clip_a")["boxes"].shape[1] == 2


def test_import_something_else(tmp_path, capsys):
    entry = [{"name": "123/0001.jpg", "labels": [{"box2d": {"x1": 1, "y1": 2, "x2": 30, "y2": 40},
                                                  "category": "cup", "standard_category": "0000"}]},
             {"name": "123/0003.jpg", "labels": []}]
    (tmp_path / "part1.json").write_text(json.dumps({"123": entry}))
    out = tmp_path / "gt.sqlite"
    assert main(["proposals", "import-something-else", str(tmp_path / "part1.json"), "--out", str(out),
                 "--no-progress"]) == 0
    assert "1 videos" in capsys.readouterr().out
    with ProposalStore(out, "r") as store:
        rec = store.get("123")
    assert rec["frames"].tolist() == [0, 2] and rec["num_boxes"].tolist() == [1, 0]
    np.testing.assert_allclose(rec["boxes"][0, 0], [1, 2, 30, 40])
