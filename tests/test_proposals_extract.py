"""The extraction loop: frame rate, chunks back in order, resume, corrupt videos, interruption."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from strg.data.proposals import ProposalStore
from strg.data.testing import index_frames, level, write_frame_folder, write_video
from strg.errors import DataError
from strg.proposals.extract import VideoEntry, extract_proposals, find_videos, frame_indices_at_rate


class GreyProposer:
    """Detector stand-in: per frame one box, its score the frame's mean grey level / 255 (so a
    stored score tells which frame it came from), and a record of every frame count it saw."""

    def __init__(self, k=2, fail_after=None):
        self.k, self.seen, self.fail_after = k, [], fail_after

    def __call__(self, frames):
        if self.fail_after is not None and len(self.seen) >= self.fail_after:
            raise KeyboardInterrupt
        self.seen.append(len(frames))
        n, h, w, _ = frames.shape
        boxes = torch.zeros(n, self.k, 4)
        boxes[:, 0] = torch.tensor([1.0, 2.0, w - 1.0, h - 2.0])
        scores = torch.zeros(n, self.k)
        scores[:, 0] = frames.float().mean(dim=(1, 2, 3)) / 255
        return boxes, scores, torch.ones(n, dtype=torch.int64)


@pytest.mark.parametrize(
    "n,fps,rate,expected",
    [
        (48, 24.0, 6.0, list(range(0, 48, 4))),
        (25, 12.0, 6.0, list(range(0, 25, 2))),
        (10, 4.0, 6.0, list(range(10))),  # slower than the rate: every frame
        (30, 25.0, 10.0, [0, 2, 5, 7, 10, 12, 15, 17, 20, 22, 25, 27]),  # floor(j * 2.5)
    ],
)
def test_frame_indices_at_rate(n, fps, rate, expected):
    assert frame_indices_at_rate(n, fps, rate).tolist() == expected


def test_frame_indices_cover_the_video_at_ntsc_rate():
    idx = frame_indices_at_rate(300, 29.97, 6.0)
    assert idx[0] == 0 and idx[-1] < 300 and (np.diff(idx) >= 4).all() and (np.diff(idx) <= 5).all()
    assert len(idx) == int(np.ceil(300 / (29.97 / 6)))  # one frame per 1/6 s of video


def test_find_videos(tmp_path):
    write_video(tmp_path / "a.mp4", index_frames(4))
    write_video(tmp_path / "b.webm", index_frames(4))
    write_frame_folder(tmp_path / "c", index_frames(3))
    (tmp_path / "notes.txt").write_text("not a video")
    found = find_videos([tmp_path])
    assert [(v.video_id, v.path.name) for v in found] == [("a", "a.mp4"), ("b", "b.webm"), ("c", "c")]
    assert [v.video_id for v in find_videos([tmp_path / "c", tmp_path / "a.mp4"])] == ["c", "a"]
    with pytest.raises(DataError, match="given twice"):
        find_videos([tmp_path / "a.mp4", tmp_path])
    with pytest.raises(DataError, match="missing.mp4"):
        find_videos([tmp_path / "missing.mp4"])


@pytest.fixture()
def videos(tmp_path):
    """Three small videos: 24 fps (24 frames), 12 fps (20 frames), a 24-fps frame folder (12)."""
    root = tmp_path / "videos"
    root.mkdir()
    write_video(root / "v24.mp4", index_frames(24, 32, 48), fps=24)
    write_video(root / "v12.webm", index_frames(20, 32, 48), fps=12)
    write_frame_folder(root / "folder", index_frames(12, 32, 48))
    return find_videos([root])


@pytest.mark.parametrize("workers", [0, 2])
def test_extract_writes_every_video_in_frame_order(videos, tmp_path, workers):
    store_path = tmp_path / "p.sqlite"
    proposer = GreyProposer()
    result = extract_proposals(videos, store_path, proposer, rate=6.0, batch_size=4, num_workers=workers,
                               device="cpu", progress=False)
    assert sorted(result.written) == ["folder", "v12", "v24"] and not result.failed
    assert result.frames == sum(proposer.seen) == 6 + 10 + 3
    assert max(proposer.seen) <= 4  # batches of at most batch_size frames
    with ProposalStore(store_path, "r") as store:
        for vid, fps, step in [("v24", 24.0, 4), ("v12", 12.0, 2), ("folder", 24.0, 4)]:
            rec = store.get(vid)
            assert rec["fps"] == fps and rec["frame_size"] == (32, 48)
            assert rec["frames"].tolist() == list(range(0, len(rec["frames"]) * step, step))
            # each stored row came from its own frame (lossy codecs: a few grey levels off)
            np.testing.assert_allclose(rec["scores"][:, 0] * 255, level(rec["frames"]), atol=4)
            assert rec["num_boxes"].tolist() == [1] * len(rec["frames"])
            np.testing.assert_allclose(rec["boxes"][:, 0], [[1, 2, 47, 30]] * len(rec["frames"]))


def test_resume_skips_videos_already_in_the_store(videos, tmp_path):
    store_path = tmp_path / "p.sqlite"
    with ProposalStore(store_path, "a") as store:
        store.put("v24", frames=np.array([0]), boxes=np.zeros((1, 1, 4), np.float32),
                  scores=np.full((1, 1), 0.5, np.float32), num_boxes=np.array([0]), frame_size=(32, 48))
    proposer = GreyProposer()
    result = extract_proposals(videos, store_path, proposer, rate=6.0, batch_size=8, num_workers=0, progress=False)
    assert result.skipped == ["v24"] and sorted(result.written) == ["folder", "v12"]
    assert sum(proposer.seen) == 10 + 3  # the frames of v24 never reached the detector
    with ProposalStore(store_path, "r") as store:
        assert store.get("v24")["frames"].tolist() == [0]  # untouched
        assert len(store) == 3
    again = GreyProposer()
    result = extract_proposals(videos, store_path, again, num_workers=0, progress=False)
    assert again.seen == [] and not result.written and len(result.skipped) == 3


def test_corrupt_video_is_reported_and_others_written(videos, tmp_path, capsys):
    bad = tmp_path / "videos" / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    empty = tmp_path / "videos" / "empty.mp4"
    empty.write_bytes(b"")
    entries = find_videos([tmp_path / "videos"])
    result = extract_proposals(entries, tmp_path / "p.sqlite", GreyProposer(), num_workers=1, progress=True)
    assert set(result.failed) == {"broken", "empty"}
    assert all("DataError" in why for why in result.failed.values())
    assert sorted(result.written) == ["folder", "v12", "v24"]
    with ProposalStore(tmp_path / "p.sqlite", "r") as store:
        assert store.keys() == ["folder", "v12", "v24"]
    assert "skipping broken" in capsys.readouterr().err


class BreaksMidway:
    """A source whose second read fails, as a truncated file does after some good frames."""

    num_frames, fps, height, width = 40, 24.0, 8, 8

    def __init__(self, path):
        self.reads = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def get_frames(self, indices):
        self.reads += 1
        if self.reads > 1:
            raise DataError("truncated")
        return torch.zeros(len(indices), 8, 8, 3, dtype=torch.uint8)


def test_video_failing_midway_writes_nothing(tmp_path):
    entries = [VideoEntry("half", tmp_path / "half.mp4")]
    result = extract_proposals(entries, tmp_path / "p.sqlite", GreyProposer(), batch_size=4, num_workers=0,
                               progress=False, opener=BreaksMidway)
    assert list(result.failed) == ["half"] and "truncated" in result.failed["half"]
    with ProposalStore(tmp_path / "p.sqlite", "r") as store:
        assert len(store) == 0


def test_interrupted_run_keeps_finished_videos(videos, tmp_path):
    store_path = tmp_path / "p.sqlite"
    # dies on its third batch: "folder" (one batch of 3 frames) is complete, "v12" (10 frames)
    # is half done
    with pytest.raises(KeyboardInterrupt):
        extract_proposals(videos, store_path, GreyProposer(fail_after=2), batch_size=3, num_workers=0,
                          progress=False)
    with ProposalStore(store_path, "r") as store:
        assert store.keys() == ["folder"]
    again = GreyProposer()
    result = extract_proposals(videos, store_path, again, batch_size=3, num_workers=0, progress=False)
    assert result.skipped == ["folder"] and sorted(result.written) == ["v12", "v24"]
    assert sum(again.seen) == 10 + 6
