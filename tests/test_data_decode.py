"""Decoding: exact frame indices from mp4/webm (PyAV) and JPEG folders; bad files give DataError."""

import os

import av
import numpy as np
import pytest
import torch

from strg.data import decode
from strg.data.decode import (
    FrameFolderSource,
    PyAVSource,
    TorchCodecSource,
    open_video,
    resolve_backend,
    torchcodec_available,
)
from strg.data.testing import index_frames, level, write_frame_folder, write_video
from strg.errors import ConfigError, DataError

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


def _cut_in_half(tmp_path, ext):
    """A 60-frame video whose file ends halfway: ``tmp_path / cut.<ext>``."""
    data = open(write_video(tmp_path / f"v.{ext}", index_frames(60), fps=24), "rb").read()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) // 2])
    return cut


@pytest.mark.parametrize("ext", ["mp4", "webm"])
def test_truncated_video(tmp_path, ext):
    cut = _cut_in_half(tmp_path, ext)
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


needs_torchcodec = pytest.mark.skipif(not torchcodec_available(),
                                      reason="TorchCodec not usable here (needs system FFmpeg)")


def _noisy_frames(n, h, w, seed=0, noise=20.0):
    """Gradients plus strong noise: every chroma sample matters for the RGB conversion."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    t = np.arange(n, dtype=np.float32)[:, None, None]
    base = np.stack([(x + 3 * t) % 256, (y + 2 * t) % 256, ((x + y) / 2 + t) % 256], axis=-1)
    return np.clip(base + rng.normal(0, noise, (n, h, w, 3)), 0, 255).astype(np.uint8)


@needs_torchcodec
@pytest.mark.parametrize(
    "name,h,w,fps",
    [("v.mp4", 48, 64, 24), ("v.webm", 98, 131, 30), ("w.mp4", 76, 102, 29.97), ("odd.webm", 97, 132, 30)],
)
def test_torchcodec_matches_pyav(tmp_path, name, h, w, fps):
    path = write_video(tmp_path / name, _noisy_frames(16, h, w), fps=fps, gop=6)
    idx = [15, 0, 7, 8, 5, 5]
    with open_video(path, backend="pyav") as a, open_video(path, backend="torchcodec") as b:
        assert isinstance(b, TorchCodecSource)
        assert (a.num_frames, a.height, a.width) == (b.num_frames, b.height, b.width) == (16, h, w)
        assert a.fps == pytest.approx(b.fps, rel=1e-6)  # both from the header (30, not 30.0075)
        # the same pixels, bit for bit, odd heights included: there swscale cannot take its direct
        # YUV -> RGB path and its interpolation mode matters (bilinear gave up to 7 levels less or more)
        assert torch.equal(a.get_frames(idx), b.get_frames(idx))


@needs_torchcodec
@pytest.mark.parametrize("ext", ["mp4", "webm"])
def test_torchcodec_bad_files(tmp_path, ext):
    cut = _cut_in_half(tmp_path, ext)
    with pytest.raises(DataError, match=f"cut.{ext}"):
        with open_video(cut, backend="torchcodec") as src:
            src.get_frames(range(src.num_frames))
    junk = tmp_path / f"junk.{ext}"
    junk.write_bytes(os.urandom(2000))
    with pytest.raises(DataError, match=f"junk.{ext}"):
        open_video(junk, backend="torchcodec")
    whole = tmp_path / f"v.{ext}"  # the uncut video
    with open_video(whole, backend="torchcodec") as src, pytest.raises(DataError, match="frame index 60 out of range"):
        src.get_frames([2, 60])


@needs_torchcodec
def test_torchcodec_zero_frames(tmp_path):
    p = str(tmp_path / "empty.mp4")
    with av.open(p, "w") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        c.start_encoding()
    with pytest.raises(DataError, match="empty.mp4.*zero frames"):
        open_video(p, backend="torchcodec")


def test_backend_selection(monkeypatch):
    """auto is PyAV; the GPU backends need CUDA and a CUDA TorchCodec, auto-cuda falls back to the CPU."""
    cpu = torch.device("cpu")
    assert resolve_backend("auto") == ("pyav", cpu)
    assert resolve_backend("pyav") == ("pyav", cpu)
    assert resolve_backend("torchcodec") == ("torchcodec", cpu)
    with pytest.raises(ConfigError, match="decode_backend must be one of.*'nvdec'"):
        resolve_backend("nvdec")
    monkeypatch.setattr(decode, "torchcodec_cuda_problem", lambda: "torch sees no CUDA device")
    assert resolve_backend("auto-cuda") == ("pyav", cpu)
    assert not decode.decodes_on_gpu("auto-cuda")
    with pytest.raises(ConfigError, match="torchcodec-cuda: cannot decode on the GPU: torch sees no CUDA device"):
        resolve_backend("torchcodec-cuda")
    monkeypatch.setattr(decode, "torchcodec_cuda_problem", lambda: None)
    assert resolve_backend("torchcodec-cuda", device="cuda:1") == ("torchcodec", torch.device("cuda:1"))
    assert resolve_backend("auto-cuda", device="cuda:0") == ("torchcodec", torch.device("cuda:0"))
    assert decode.decodes_on_gpu("auto-cuda") and not decode.decodes_on_gpu("torchcodec")
    with pytest.raises(ConfigError, match="CUDA device, not cpu"):
        resolve_backend("torchcodec-cuda", device="cpu")


def test_cuda_problem_names_what_is_missing(monkeypatch):
    monkeypatch.setattr(decode, "torchcodec_available", lambda: False)
    assert "TorchCodec is not installed" in decode.torchcodec_cuda_problem()
    monkeypatch.setattr(decode, "torchcodec_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert decode.torchcodec_cuda_problem() == "torch sees no CUDA device"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(decode, "_torchcodec_has_cuda", lambda: False)
    assert "no CUDA support" in decode.torchcodec_cuda_problem()


class _OpenInWorker(torch.utils.data.Dataset):
    def __init__(self, path):
        self.path = path

    def __len__(self):
        return 1

    def __getitem__(self, i):
        try:
            open_video(self.path, backend="torchcodec-cuda", device="cuda:0")
        except ConfigError as e:
            return str(e)
        return "opened"


def test_gpu_backend_refused_in_dataloader_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(decode, "torchcodec_cuda_problem", lambda: None)  # as on a GPU machine
    path = write_video(tmp_path / "v.mp4", index_frames(4), fps=24)
    loader = torch.utils.data.DataLoader(_OpenInWorker(path), batch_size=None, num_workers=1,
                                         multiprocessing_context="fork")
    assert "set train.num_workers=0" in next(iter(loader))


@pytest.mark.skipif(decode.torchcodec_cuda_problem() is not None, reason="needs CUDA and a CUDA build of TorchCodec")
def test_torchcodec_cuda_matches_cpu(tmp_path):
    """NVDEC's frames against the CPU decoder's: the same video, colour conversion on the GPU."""
    path = write_video(tmp_path / "v.mp4", _noisy_frames(30, 240, 320, noise=3.0), fps=24, gop=8)
    idx = [29, 0, 17, 18, 5]
    with open_video(path, backend="torchcodec-cuda") as g, open_video(path, backend="torchcodec") as c:
        fg, fc = g.get_frames(idx), c.get_frames(idx)
        assert fg.device.type == "cuda" and fg.dtype == torch.uint8 and fg.shape == fc.shape
        # the same decoded YUV; the YUV -> RGB conversion (chroma upsampling, rounding) is NVDEC's
        # own CUDA kernel against swscale's bicubic: a few levels apart on smooth frames
        diff = (fg.cpu().int() - fc.int()).abs()
        mean, most = float(diff.float().mean()), int(diff.max())
        assert mean <= 2.0 and most <= 24, f"NVDEC vs CPU: mean |diff| {mean:.3f}, max {most}"


def _manifest_dataset(tmp_path, backend):
    from strg.data import build_dataset

    if not (tmp_path / "classes.txt").exists():
        (tmp_path / "classes.txt").write_text("a\nb\n")
        write_video(tmp_path / "v.mp4", _noisy_frames(24, 48, 64), fps=24, gop=8)
        (tmp_path / "val.csv").write_text("path,labels\nv.mp4,b\n")
    return build_dataset("manifest", split="val", training=False, manifest=str(tmp_path / "val.csv"),
                         classes_file=str(tmp_path / "classes.txt"), num_frames=4, stride=3, stride_unit="frames",
                         test_clips=2, test_short_side=32, crop_size=32, decode_backend=backend)


def test_dataset_decode_backend_option(tmp_path, monkeypatch):
    """The data option: the GPU backend refused before any video is read when it cannot work; auto-cuda
    falls back to the CPU decoders and gives PyAV's clips."""
    ref = _manifest_dataset(tmp_path, "pyav")[1]["clip"]
    monkeypatch.setattr(decode, "torchcodec_cuda_problem", lambda: "torch sees no CUDA device")
    import strg.data.datasets as datasets

    monkeypatch.setattr(datasets, "torchcodec_cuda_problem", decode.torchcodec_cuda_problem)
    with pytest.raises(ConfigError, match="torchcodec-cuda: cannot decode on the GPU: torch sees no CUDA device"):
        _manifest_dataset(tmp_path, "torchcodec-cuda")
    assert torch.equal(_manifest_dataset(tmp_path, "auto-cuda")[1]["clip"], ref)
    with pytest.raises(ConfigError, match="decode_backend must be one of"):
        _manifest_dataset(tmp_path, "gpu")


@needs_torchcodec
def test_dataset_clips_equal_with_torchcodec(tmp_path):
    """Through the whole item pipeline (sampling, resize, normalisation), TorchCodec gives PyAV's clips."""
    a, b = _manifest_dataset(tmp_path, "pyav"), _manifest_dataset(tmp_path, "torchcodec")
    for i in range(len(a)):
        torch.testing.assert_close(a[i]["clip"], b[i]["clip"], rtol=0, atol=0)


def test_loaders_do_not_pin_frames_decoded_on_the_gpu(monkeypatch):
    from types import SimpleNamespace

    from strg.engine.evaluator import pin_batches

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(decode, "torchcodec_cuda_problem", lambda: None)  # as on a GPU machine
    assert pin_batches(SimpleNamespace(decode_backend="auto"), cuda)
    assert not pin_batches(SimpleNamespace(decode_backend="torchcodec-cuda"), cuda)
    assert not pin_batches(SimpleNamespace(decode_backend="auto-cuda"), cuda)
    assert not pin_batches(SimpleNamespace(decode_backend="auto"), cpu)
    assert pin_batches(object(), cuda)  # cached features and other datasets without the option
    monkeypatch.setattr(decode, "torchcodec_cuda_problem", lambda: "torch sees no CUDA device")
    assert pin_batches(SimpleNamespace(decode_backend="auto-cuda"), cuda)  # fell back to the CPU
