"""Decoding: exact frame indices from mp4/webm (PyAV) and JPEG folders; bad files give DataError."""

import os

import av
import numpy as np
import pytest
import torch

from strg.data.decode import FrameFolderSource, PyAVSource, open_video, torchcodec_available
from strg.data.testing import index_frames, level, write_frame_folder, write_video
from strg.errors import DataError

STEP = 4  # grey-level step between frames: frame i is level(i, STEP)


def _levels(frames: torch.Tensor) -> np.ndarray:
    return frames.float().mean(dim=(1, 2, 3)).numpy()


def _check_exact(src, indices):
    frames = src.get_frames(indices)
    assert frames.dtype == torch.uint8 and frames.shape == (len(indices), src.height, src.width, 3)
    np.testing.assert_allclose(_levels(frames), level(np.asarray(indices), STEP), atol=1.6)


@pytest.mark.parametrize("ext,codec", [("mp4", "libx264"), ("webm", "libvpx-vp9")])
def test_video_exact_frames_after_seek(tmp_path, ext, codec):
    if codec not in av.codecs_available:
        pytest.skip(f"{codec} encoder not in this PyAV build")
    path = write_video(tmp_path / f"v.{ext}", index_frames(60, step=STEP), fps=30, gop=10)
    with open_video(path, backend="pyav") as src:
        assert isinstance(src, PyAVSource)
        assert (src.num_frames, src.height, src.width) == (60, 48, 64)
        assert src.fps == pytest.approx(30)
        # backwards, forwards across keyframes, repeats, the last frame
        _check_exact(src, [59, 0, 5, 33, 34, 12, 59, 1, 47])
        _check_exact(src, list(range(0, 60, 7)))


def test_frame_folders_charades_and_something_v1(tmp_path):
    frames = index_frames(12, step=STEP)
    ch = write_frame_folder(tmp_path / "abc12", frames, pattern="abc12-{:06d}.jpg", first=1)
    assert os.path.exists(os.path.join(ch, "abc12-000001.jpg"))
    with open_video(ch) as src:
        assert isinstance(src, FrameFolderSource)
        assert (src.num_frames, src.fps, src.height, src.width) == (12, 24.0, 48, 64)
        _check_exact(src, [11, 0, 3, 3])
    ss = write_frame_folder(tmp_path / "777", frames, pattern="{:05d}.jpg", first=1)
    with open_video(ss, fps=12) as src:
        assert src.fps == 12.0 and src.num_frames == 12
        _check_exact(src, [0, 6, 11])


def test_frame_folder_gap_and_truncated_jpeg(tmp_path):
    folder = write_frame_folder(tmp_path / "f", index_frames(5))
    os.remove(os.path.join(folder, "00003.jpg"))
    with pytest.raises(DataError, match=r"not consecutive.*00002\.jpg.*00004\.jpg"):
        open_video(folder)
    folder = write_frame_folder(tmp_path / "g", index_frames(5))
    bad = os.path.join(folder, "00002.jpg")
    data = open(bad, "rb").read()
    open(bad, "wb").write(data[: len(data) // 3])
    with open_video(folder) as src, pytest.raises(DataError, match="00002.jpg"):
        src.get_frames([1])


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.mp4.*not found"):
        open_video(tmp_path / "nope.mp4")


def test_unreadable_file(tmp_path):
    p = tmp_path / "junk.mp4"
    p.write_bytes(os.urandom(2000))
    with pytest.raises(DataError, match="junk.mp4"):
        open_video(p)


@pytest.mark.parametrize("ext", ["mp4", "webm"])
def test_truncated_video(tmp_path, ext):
    path = write_video(tmp_path / f"v.{ext}", index_frames(60), fps=24)
    data = open(path, "rb").read()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=f"cut.{ext}"):
        with open_video(cut) as src:
            src.get_frames(range(src.num_frames))


def test_zero_frames(tmp_path):
    p = str(tmp_path / "empty.mp4")
    with av.open(p, "w") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        c.start_encoding()
    with pytest.raises(DataError, match="empty.mp4.*zero frames"):
        open_video(p)
    os.makedirs(tmp_path / "nothing")
    with pytest.raises(DataError, match="nothing.*zero frames"):
        open_video(tmp_path / "nothing")


def test_index_out_of_range(tmp_path):
    path = write_video(tmp_path / "v.mp4", index_frames(10), fps=24)
    with open_video(path) as src, pytest.raises(DataError, match="frame index 10 out of range"):
        src.get_frames([2, 10])


def test_one_decoding_thread_by_default(tmp_path):
    path = write_video(tmp_path / "v.mp4", index_frames(10), fps=24)
    with open_video(path, backend="pyav") as src:
        assert src._stream.codec_context.thread_count == 1
        assert str(src._stream.codec_context.thread_type) != "AUTO"


@pytest.mark.skipif(not torchcodec_available(), reason="TorchCodec not usable here (needs system FFmpeg)")
def test_torchcodec_matches_pyav(tmp_path):
    path = write_video(tmp_path / "v.mp4", index_frames(40, step=STEP), fps=24)
    idx = [39, 0, 17, 18, 5]
    with open_video(path, backend="pyav") as a, open_video(path, backend="torchcodec") as b:
        assert (a.num_frames, a.height, a.width) == (b.num_frames, b.height, b.width)
        assert a.fps == pytest.approx(b.fps)
        assert torch.equal(a.get_frames(idx), b.get_frames(idx))
