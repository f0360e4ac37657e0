"""Frame sources: video files (PyAV, TorchCodec on the CPU or the GPU) and JPEG frame folders.

One small interface for all of them::

    src = open_video(path)               # file -> PyAV / TorchCodec, folder -> frame folder
    src.num_frames, src.fps, src.height, src.width
    frames = src.get_frames([0, 4, 8])   # uint8 Tensor[N, H, W, 3], RGB, exact frame indices
    src.close()                          # or `with open_video(path) as src:`

Frame ``i`` is the ``i``-th frame in presentation order (0-based), whatever the container says
about timestamps. Errors (missing path, unreadable or truncated file, no frames, index out of
range) raise :class:`strg.errors.DataError` naming the file.

One place turns decoder failures into that error: :func:`decoder_errors`. Every
:class:`FrameSource` subclass gets its ``__init__`` and ``_decode_sorted`` wrapped by it
(``FrameSource.__init_subclass__``), so a new backend needs no error handling of its own for
the exceptions its library raises on a bad file. Those come in any type: a WebM cut to a quarter
of its bytes makes PyAV's seek raise ``av.error.PermissionError``, an mp4 cut at two thirds
leaves a stream without a codec context (``AttributeError`` on ``None``), Pillow raises
``OSError``, ``SyntaxError`` or ``struct.error`` for broken images, TorchCodec ``RuntimeError``.
So every ``Exception`` becomes a DataError, except :data:`NOT_DATA_ERRORS` (a missing module or
out of memory is not the file's fault).

Decoding notes (docs/formats.md):

* torchvision's video readers are gone from current releases; PyAV wheels carry FFmpeg with
  H.264 and VP9, so it is the default (``backend="auto"``). TorchCodec needs FFmpeg's shared
  libraries from the system (Debian: ``libavcodec59``, ``libavformat59``, ``libavdevice59``,
  ``libavfilter8``, ``libswscale6``; FFmpeg 4 to 8 work); it is used when asked for
  (``"torchcodec"``, ``"torchcodec-cuda"``, ``"auto-cuda"``, see :func:`resolve_backend`).
  Both give the same RGB frames, bit for bit, whatever their FFmpeg versions (PyAV's 8, Debian's
  5.1; tests/test_data_decode.py): the decoders are bit-exact (H.264, VP9), and PyAV converts to
  RGB with swscale's bicubic mode as TorchCodec and the ffmpeg command line do (it differs from
  bilinear only for odd frame heights, docs/data.md).
* Exact indices with PyAV: on opening, the container is demuxed once (packets only, no decoding)
  to list every frame's timestamp and keyframe flag, the equivalent of TorchCodec's
  ``seek_mode="exact"``. This also counts frames in containers that do not store a count (WebM).
  A seek lands on the keyframe at or before the wanted frame; we decode forward from there until
  the wanted timestamp, and seek again only when the next wanted frame lies behind the decoder
  or beyond a later keyframe.
* Threads: FFmpeg gets ``threads`` decoding threads, default 1, so N DataLoader workers use N
  cores rather than N x cores. More than one thread uses slice threading, never ``"AUTO"``/frame
  threading, which can deadlock when decoding stops before the end of the stream.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import lru_cache, wraps

import numpy as np
import torch
from torch.utils.data import get_worker_info

from strg.errors import DataError

#: Frame rate assumed for frame folders when none is given: the Charades RGB frames are 24 fps
#: (docs/formats.md). Something-Something v1 folders are 12 fps: pass ``fps=12``.
DEFAULT_FOLDER_FPS = 24.0

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

__all__ = [
    "DECODE_BACKENDS",
    "DEFAULT_FOLDER_FPS",
    "FrameFolderSource",
    "FrameSource",
    "PyAVSource",
    "TorchCodecSource",
    "decoder_errors",
    "decodes_on_gpu",
    "open_video",
    "resolve_backend",
    "torchcodec_available",
    "torchcodec_cuda_problem",
]


#: exceptions that are not the file's fault and pass through :func:`decoder_errors` unchanged
NOT_DATA_ERRORS: tuple[type[BaseException], ...] = (ImportError, MemoryError, RecursionError)


@contextmanager
def decoder_errors(path: str | os.PathLike, what: str = "unreadable video") -> Iterator[None]:
    """Turn any exception a decoder raises inside the block into a DataError naming ``path``.

    ``with decoder_errors(path, "cannot open video"): ...`` -> ``DataError("<path>: cannot open
    video (PermissionError: [Errno 1] Operation not permitted)")``. A DataError raised inside
    passes unchanged (it already names the file); so do :data:`NOT_DATA_ERRORS`.
    """
    try:
        yield
    except (DataError, *NOT_DATA_ERRORS):
        raise
    except Exception as e:
        raise DataError(f"{os.fspath(path)}: {what} ({type(e).__name__}: {e})") from e


def _guarded(method: Callable, what: str) -> Callable:
    """``method`` of a FrameSource run under :func:`decoder_errors`; a failing ``__init__``
    closes what it opened."""

    @wraps(method)
    def wrapper(self, *args, **kwargs):
        path = getattr(self, "path", None) or (args[0] if args else kwargs.get("path", "<video>"))
        try:
            with decoder_errors(path, what):
                return method(self, *args, **kwargs)
        except BaseException:
            if method.__name__ == "__init__":
                with suppress(Exception):  # a half-built source: the original error matters
                    self.close()
            raise

    wrapper._decoder_guarded = True
    return wrapper


class FrameSource(ABC):
    """A video as a random-access sequence of RGB frames.

    Attributes:
        path (str): the file or folder.
        num_frames (int): number of frames (> 0).
        fps (float): frames per second (frame ``i`` starts at ``i / fps`` seconds).
        height, width (int): frame size in pixels.
    """

    path: str
    num_frames: int
    fps: float
    height: int
    width: int

    def __init_subclass__(cls, **kwargs) -> None:
        # every backend's library calls go through decoder_errors (module docstring)
        super().__init_subclass__(**kwargs)
        for name, what in (("__init__", "cannot open (unreadable, truncated or not a video)"),
                           ("_decode_sorted", "decoding failed (corrupt or truncated)")):
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, "_decoder_guarded", False):
                setattr(cls, name, _guarded(method, what))

    def get_frames(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """Frames at ``indices`` (any order, repeats allowed) as uint8 Tensor[N, H, W, 3]."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            return torch.empty(0, self.height, self.width, 3, dtype=torch.uint8)
        bad = idx[(idx < 0) | (idx >= self.num_frames)]
        if bad.size:
            raise DataError(f"{self.path}: frame index {int(bad[0])} out of range (video has {self.num_frames} frames)")
        if idx.size == 1 or (np.diff(idx) > 0).all():
            return self._decode_sorted(idx)  # already increasing: no reordering copy
        unique, inverse = np.unique(idx, return_inverse=True)  # decode each frame once, in order
        frames = self._decode_sorted(unique)  # (U, H, W, 3)
        return frames[torch.from_numpy(inverse.reshape(-1))]

    @abstractmethod
    def _decode_sorted(self, indices: np.ndarray) -> torch.Tensor:
        """Frames at strictly increasing ``indices`` (in range) as uint8 Tensor[U, H, W, 3]."""

    def close(self) -> None:  # noqa: B027 - optional for sources without open handles
        """Release file handles (idempotent)."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.path!r}, num_frames={self.num_frames}, fps={self.fps:g}, "
            f"size={self.height}x{self.width})"
        )


# ----------------------------------------------------------------------------------------------
# Truncated files


def header_duration(container, stream) -> float | None:
    """Seconds the header declares for the video: the stream's duration, else the container's
    when it holds nothing else (WebM stores only the latter); None when neither is there."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration and len(container.streams) == 1:
        return container.duration / 1e6  # AV_TIME_BASE units
    return None


def check_not_image(path: str, container) -> None:
    """FFmpeg opens a still image (a PNG or JPEG under a video's name) as a one-frame video:
    refuse it rather than train on one frame repeated."""
    name = container.format.name
    if name.endswith("_pipe") or name in ("image2", "image2pipe"):
        raise DataError(f"{path}: an image file ({name.removesuffix('_pipe')}), not a video")


def check_complete(path: str, declared: float | None, indexed: float, fps: float) -> None:
    """Raise DataError when the frames end well before the duration the header declares.

    A cut-off WebM still demuxes and decodes without error, only with fewer frames; comparing
    the time its frames span (``indexed`` seconds, last frame's end) with the header's duration
    catches it. Allowed slack: 10% of the duration plus two frames.
    """
    if declared and indexed < 0.9 * declared - 2.0 / fps:
        raise DataError(f"{path}: truncated video (header says {declared:.2f} s, frames end at {indexed:.2f} s)")


# ----------------------------------------------------------------------------------------------
# PyAV


class PyAVSource(FrameSource):
    """A video file decoded with PyAV (FFmpeg bundled in the wheel), exact frame indices.

    Args:
        path: the video file.
        threads: FFmpeg decoding threads (default 1: one per DataLoader worker).
    """

    def __init__(self, path: str, *, threads: int = 1) -> None:
        import av  # imported here so that `import strg.data` stays light
        from av.video.reformatter import VideoReformatter

        self.path = str(path)
        self._av = av
        # One colour converter for all frames of the video: ``frame.to_ndarray(format="rgb24")``
        # builds a new swscale context for every frame, which costs far more than decoding
        # small frames (docs/data.md, "Decoding"; the same pixels either way). One scaling
        # thread, like the decoder: parallelism comes from DataLoader workers.
        self._reformatter = VideoReformatter()
        # Bicubic, as the ffmpeg command line and TorchCodec: it matters only where swscale cannot
        # take its direct YUV -> RGB path (odd frame heights), and there it gives the frames those
        # give (equal to TorchCodec's, tests/test_data_decode.py; bilinear differed by up to 7 levels)
        self._rgb = {"format": "rgb24", "interpolation": "BICUBIC", "threads": 1}
        if not os.path.isfile(self.path):
            raise DataError(f"{self.path}: video file not found")
        try:
            self._container = av.open(self.path, mode="r")
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
            raise DataError(f"{self.path}: cannot open video ({e})") from e
        try:
            check_not_image(self.path, self._container)
            if not self._container.streams.video:
                raise DataError(f"{self.path}: video has zero frames (no video stream)")
            self._stream = self._container.streams.video[0]
            ctx = self._stream.codec_context
            if ctx is None:  # e.g. an mp4 cut inside its stream description
                raise DataError(f"{self.path}: unreadable or truncated video (no decoder for its video stream)")
            ctx.thread_count = max(1, int(threads))
            ctx.thread_type = "SLICE" if threads > 1 else "NONE"  # never AUTO/FRAME (module doc)
            self.height, self.width = int(ctx.height), int(ctx.width)
            self._pts, self._key = self._scan()
            self.num_frames = len(self._pts)
            if self.num_frames == 0:
                raise DataError(f"{self.path}: video has zero frames")
            if self.height <= 0 or self.width <= 0:
                raise DataError(f"{self.path}: video stream has no frame size")
            self.fps = self._frame_rate()
            self._check_complete()
        except BaseException:
            self.close()
            raise
        self._next = 0  # index of the frame the decoder would return next (after a seek: unknown)
        self._frames_iter = None

    def _scan(self) -> tuple[np.ndarray, np.ndarray]:
        """Timestamps (sorted = presentation order) and keyframe flags of all frames, by demuxing."""
        pts, key = [], []
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0:  # the flush packet at the end of the stream
                    continue
                t = packet.pts if packet.pts is not None else packet.dts
                if t is None:
                    raise DataError(f"{self.path}: packet without timestamp; cannot index frames exactly")
                pts.append(t)
                key.append(packet.is_keyframe)
            self._container.seek(0)  # rewind for decoding (fails on some cut files)
        except self._av.error.FFmpegError as e:
            raise DataError(f"{self.path}: unreadable or truncated video ({type(e).__name__}: {e})") from e
        pts_a = np.asarray(pts, dtype=np.int64)
        key_a = np.asarray(key, dtype=bool)
        order = np.argsort(pts_a, kind="stable")
        pts_a, key_a = pts_a[order], key_a[order]
        if pts_a.size and not key_a[0]:
            key_a[0] = True  # decoding always starts at the first packet
        return pts_a, key_a

    def _frame_rate(self) -> float:
        rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
        if rate and float(rate) > 0:
            return float(rate)
        if self.num_frames > 1:  # from the timestamps
            span = float((self._pts[-1] - self._pts[0]) * self._stream.time_base)
            if span > 0:
                return (self.num_frames - 1) / span
        raise DataError(f"{self.path}: cannot determine the frame rate")

    def _check_complete(self) -> None:
        """Raise DataError when the packets end well before the duration the header declares."""
        tb = self._stream.time_base
        if not tb:
            return
        indexed = float((self._pts[-1] - self._pts[0]) * tb) + 1.0 / self.fps
        check_complete(self.path, header_duration(self._container, self._stream), indexed, self.fps)

    def _decode_sorted(self, indices: np.ndarray) -> torch.Tensor:
        av = self._av
        out = np.empty((len(indices), self.height, self.width, 3), dtype=np.uint8)
        keyframes = np.flatnonzero(self._key)
        try:
            for j, i in enumerate(indices):
                # the keyframe at or before i: if the decoder is behind it, seeking skips work
                k = keyframes[np.searchsorted(keyframes, i, side="right") - 1]
                if self._frames_iter is None or i < self._next or k > self._next:
                    self._container.seek(int(self._pts[k]), stream=self._stream, backward=True, any_frame=False)
                    self._frames_iter = self._container.decode(self._stream)
                    self._next = -1  # unknown until the first frame comes out
                target = self._pts[i]
                while True:
                    frame = next(self._frames_iter, None)
                    if frame is None:
                        self._frames_iter = None
                        raise DataError(
                            f"{self.path}: frame {int(i)} could not be decoded (truncated or corrupt video; "
                            f"the container lists {self.num_frames} frames)"
                        )
                    t = frame.pts if frame.pts is not None else frame.dts
                    first_after_seek = self._next == -1
                    pos = int(np.searchsorted(self._pts, t)) if t is not None else self._next
                    self._next = pos + 1
                    if t is not None and t >= target:
                        if t == target:
                            break
                        if first_after_seek and k > 0:  # the seek overshot: restart from the top
                            k = 0
                            self._container.seek(int(self._pts[0]), stream=self._stream, backward=True)
                            self._frames_iter = self._container.decode(self._stream)
                            self._next = -1
                            continue
                        self._frames_iter = None  # the wanted frame never came out of the decoder
                        raise DataError(f"{self.path}: frame {int(i)} is missing from the decoded stream")
                rgb = self._to_rgb(frame)
                if rgb.shape[:2] != (self.height, self.width):
                    raise DataError(f"{self.path}: frame {int(i)} changes size to {rgb.shape[1]}x{rgb.shape[0]}")
                out[j] = rgb
        except av.error.FFmpegError as e:
            self._frames_iter = None
            raise DataError(f"{self.path}: decoding failed near frame {int(i)} ({type(e).__name__}: {e})") from e
        except BaseException:
            self._frames_iter = None  # the decoder's position is unknown: seek again next time
            raise
        return torch.from_numpy(out)

    def _to_rgb(self, frame) -> np.ndarray:
        try:
            return self._reformatter.reformat(frame, **self._rgb).to_ndarray()
        except TypeError:  # an older PyAV without the `threads` argument
            if "threads" not in self._rgb:
                raise
            del self._rgb["threads"]
            return self._reformatter.reformat(frame, **self._rgb).to_ndarray()

    def close(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            self._frames_iter = None
            container.close()
            self._container = None


# ----------------------------------------------------------------------------------------------
# TorchCodec


@lru_cache(maxsize=1)
def torchcodec_available() -> bool:
    """True when TorchCodec imports and loads its FFmpeg core (it needs system FFmpeg libraries)."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except Exception:  # ImportError, or OSError/RuntimeError when FFmpeg libraries are missing
        return False
    return True


def torchcodec_cuda_problem() -> str | None:
    """Why TorchCodec cannot decode on the GPU here, or None when it can be tried.

    Checks what can be checked without opening a video: TorchCodec loads, torch sees a CUDA
    device, and this TorchCodec build links CUDA (the CPU-only wheels of
    download.pytorch.org/whl/cpu do not; the PyPI wheels do). Whether NVDEC takes a given codec is
    only known when a video is opened (:class:`TorchCodecSource` raises DataError then).
    """
    if not torchcodec_available():
        return ("TorchCodec is not installed or cannot load FFmpeg "
                "(pip install 'strg[torchcodec]' and the system FFmpeg libraries)")
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    if not _torchcodec_has_cuda():
        return "this TorchCodec build has no CUDA support (install the CUDA wheel matching torch's CUDA version)"
    return None


@lru_cache(maxsize=1)
def _torchcodec_has_cuda() -> bool:
    import glob

    import torchcodec

    # the CUDA builds of the core library link libnvrtc / libcudart; the CPU-only builds do not
    libs = glob.glob(os.path.join(os.path.dirname(torchcodec.__file__), "libtorchcodec_core*.so"))
    for lib in libs:
        with open(lib, "rb") as f:
            data = f.read()
        if b"libcudart.so" in data or b"libnvrtc.so" in data:
            return True
    return False


class TorchCodecSource(FrameSource):
    """A video file decoded with TorchCodec (``seek_mode="exact"``), the same interface as PyAV.

    Args:
        path: the video file.
        threads: FFmpeg decoding threads on the CPU (default 1).
        device: ``"cpu"`` or a CUDA device (``"cuda"``, ``"cuda:1"``): TorchCodec's NVDEC decoder,
            frames come out on that device (uint8 Tensor[N, H, W, 3] there). When NVDEC cannot take
            the codec, TorchCodec decodes on the CPU and copies the frames over
            (``self.cpu_fallback`` tells after the first decode).

    The same checks as :class:`PyAVSource`: zero frames, and a file whose frames end well before
    the duration its header declares (a cut-off WebM) raise DataError. Frame ``i`` is the ``i``-th
    frame in presentation order (the exact-mode scan). The frame rate is the header's, as PyAV's
    ``average_rate`` (TorchCodec's ``average_fps`` counts the scanned frames over their span,
    30.0075 instead of 30 for a 40-frame WebM), and the content's when the header has none.
    """

    def __init__(self, path: str, *, threads: int = 1, device: str | torch.device = "cpu") -> None:
        if not torchcodec_available():
            raise DataError(f"{path}: TorchCodec is not usable here (not installed or no system FFmpeg)")
        import torchcodec.decoders as tc

        self.path = str(path)
        self.device = torch.device(device)
        if not os.path.isfile(self.path):
            raise DataError(f"{self.path}: video file not found")
        if hasattr(tc, "get_container_metadata"):  # TorchCodec >= 0.17: say "zero frames" for an empty stream
            header = tc.get_container_metadata(self.path)  # (an unreadable file: DataError from decoder_errors)
            best = header.best_video_stream_index
            if best is None or header.streams[best].num_frames_from_header == 0:
                raise DataError(f"{self.path}: video has zero frames (no video stream)")
        VideoDecoder = tc.VideoDecoder
        try:
            self._decoder = VideoDecoder(self.path, seek_mode="exact", num_ffmpeg_threads=max(1, int(threads)),
                                         dimension_order="NHWC", device=str(self.device))
        except Exception as e:
            raise DataError(f"{self.path}: cannot open video ({e})") from e
        meta = self._decoder.metadata
        self.num_frames = int(meta.num_frames or 0)
        if self.num_frames == 0:
            raise DataError(f"{self.path}: video has zero frames")
        self.fps = float(meta.average_fps_from_header or meta.average_fps)
        self.height, self.width = int(meta.height), int(meta.width)
        self._check_header(meta)

    def _check_header(self, meta) -> None:
        """What TorchCodec does not tell: a still image opened as a video, and a cut WebM, which
        opens and decodes without error (its header gives TorchCodec no duration): compare the
        frames' span with the duration PyAV reads from the container's header."""
        import av

        with av.open(self.path) as container:  # header only, no decoding
            check_not_image(self.path, container)
            declared = header_duration(container, container.streams.video[0])
        end, begin = meta.end_stream_seconds_from_content, meta.begin_stream_seconds_from_content or 0.0
        if end is not None:
            check_complete(self.path, declared, float(end) - float(begin), self.fps)

    @property
    def cpu_fallback(self) -> bool:
        """True when a CUDA decoder fell back to CPU decoding (known after the first decode)."""
        return self._decoder is not None and self.device.type == "cuda" and bool(self._decoder.cpu_fallback)

    def _decode_sorted(self, indices: np.ndarray) -> torch.Tensor:
        try:
            return self._decoder.get_frames_at([int(i) for i in indices]).data
        except Exception as e:
            raise DataError(f"{self.path}: decoding failed ({e})") from e

    def get_frames(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        frames = super().get_frames(indices)
        return frames.to(self.device) if frames.device != self.device else frames  # the empty case

    def close(self) -> None:
        self._decoder = None


# ----------------------------------------------------------------------------------------------
# Frame folders

_TRAILING_NUMBER = re.compile(r"(\d+)$")


def _list_frames(folder: str) -> list[str]:
    """Image files of ``folder`` in frame order, checked to be numbered without gaps.

    Works for Charades (``<id>-000001.jpg``, 1-based) and Something-Something v1 (``00001.jpg``):
    files are ordered by the number at the end of their stem, so frame 0 is the lowest number,
    which must be 0 or 1 (a higher one means the first frames are missing).
    """
    try:
        names = [n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS)]
    except OSError as e:
        raise DataError(f"{folder}: cannot list frame folder ({e})") from e
    if not names:
        raise DataError(f"{folder}: frame folder has zero frames (no .jpg/.jpeg/.png files)")
    numbered = []
    for n in names:
        m = _TRAILING_NUMBER.search(os.path.splitext(n)[0])
        if m is None:
            raise DataError(f"{os.path.join(folder, n)}: frame file name does not end in a frame number")
        numbered.append((int(m.group(1)), n))
    numbered.sort()
    numbers = np.fromiter((k for k, _ in numbered), dtype=np.int64, count=len(numbered))
    if numbers[0] > 1:  # numbering starts at 0 or 1 (Charades, Something-Something v1: 1)
        raise DataError(f"{folder}: the first frame is {numbered[0][1]}: frames before it are missing")
    gaps = np.flatnonzero(np.diff(numbers) != 1)
    if gaps.size:
        g = int(gaps[0])
        raise DataError(
            f"{folder}: frame numbers are not consecutive ({numbered[g][1]} is followed by {numbered[g + 1][1]})"
        )
    return [os.path.join(folder, n) for _, n in numbered]


class FrameFolderSource(FrameSource):
    """A folder of numbered JPEG (or PNG) frames, decoded with Pillow (libjpeg-turbo).

    Args:
        path: the folder.
        fps: frame rate of the frames (default :data:`DEFAULT_FOLDER_FPS`, 24: Charades).
    """

    def __init__(self, path: str, *, fps: float | None = None) -> None:
        self.path = str(path)
        if not os.path.isdir(self.path):
            raise DataError(f"{self.path}: frame folder not found")
        self._files = _list_frames(self.path)
        self.num_frames = len(self._files)
        self.fps = float(fps) if fps else DEFAULT_FOLDER_FPS
        self.width, self.height = self._size(self._files[0])

    def _size(self, file: str) -> tuple[int, int]:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(file) as im:  # reads the header only
                return im.size
        except (OSError, UnidentifiedImageError) as e:
            raise DataError(f"{file}: unreadable image ({e})") from e

    def _read(self, file: str) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(file) as im:
                return np.asarray(im.convert("RGB"))
        except (OSError, UnidentifiedImageError) as e:  # truncated JPEGs raise OSError
            raise DataError(f"{file}: unreadable image ({e})") from e

    def _decode_sorted(self, indices: np.ndarray) -> torch.Tensor:
        out = np.empty((len(indices), self.height, self.width, 3), dtype=np.uint8)
        for j, i in enumerate(indices):
            img = self._read(self._files[i])
            if img.shape[:2] != (self.height, self.width):
                raise DataError(
                    f"{self._files[i]}: frame size {img.shape[1]}x{img.shape[0]} differs from the first frame's "
                    f"{self.width}x{self.height}"
                )
            out[j] = img
        return torch.from_numpy(out)


# ----------------------------------------------------------------------------------------------


#: the ``backend`` values of :func:`open_video` (and the datasets' ``decode_backend`` option)
DECODE_BACKENDS = ("auto", "pyav", "torchcodec", "torchcodec-cuda", "auto-cuda")


def resolve_backend(backend: str, *, device: str | torch.device | None = None) -> tuple[str, torch.device]:
    """The decoder and the device that ``backend`` stands for here.

    * ``"auto"``, ``"pyav"``: PyAV on the CPU. ``"auto"`` is PyAV even when TorchCodec loads:
      PyAV's FFmpeg comes with its wheel (the same everywhere, no system libraries), the frames
      are the same, and TorchCodec was no faster on the CPU (docs/data.md, "Benchmarks").
    * ``"torchcodec"``: TorchCodec on the CPU.
    * ``"torchcodec-cuda"``: TorchCodec's NVDEC decoder on ``device`` (default the current CUDA
      device); :class:`ConfigError` saying what is missing when CUDA or a CUDA build of
      TorchCodec is not there.
    * ``"auto-cuda"``: ``"torchcodec-cuda"`` when it can be used here, else ``"auto"`` (the CPU).

    Returns:
        (``"pyav"`` or ``"torchcodec"``, the device the frames come out on).
    """
    from strg.errors import ConfigError

    if backend not in DECODE_BACKENDS:
        raise ConfigError(f"decode_backend must be one of {', '.join(DECODE_BACKENDS)}; got {backend!r}")
    cpu = torch.device("cpu")
    if backend in ("auto", "pyav"):
        return "pyav", cpu
    if backend == "torchcodec":
        return "torchcodec", cpu
    problem = torchcodec_cuda_problem()
    if problem is not None:
        if backend == "auto-cuda":
            return "pyav", cpu
        raise ConfigError(f"decode_backend={backend}: cannot decode on the GPU: {problem}")
    dev = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
    if dev.type != "cuda":
        raise ConfigError(f"decode_backend={backend} decodes on a CUDA device, not {dev}")
    if get_worker_info() is not None:
        # a forked DataLoader worker cannot use CUDA; decoding on the GPU belongs to the process
        # that trains (NVDEC runs beside the SMs, so it does not take their time)
        raise ConfigError(
            f"decode_backend={backend} decodes on the GPU, which DataLoader worker processes cannot use: "
            "set train.num_workers=0 and eval.num_workers=0"
        )
    return "torchcodec", dev


def decodes_on_gpu(backend: str) -> bool:
    """True when ``backend`` would give frames on a CUDA device here (the loader must not pin them)."""
    return backend in ("torchcodec-cuda", "auto-cuda") and torchcodec_cuda_problem() is None


def open_video(
    path: str | os.PathLike, *, backend: str = "auto", fps: float | None = None, threads: int = 1,
    device: str | torch.device | None = None,
) -> FrameSource:
    """Open a video file or a frame folder.

    Args:
        path: a video file (mp4, webm, ...) or a folder of numbered frames.
        backend: for files, one of :data:`DECODE_BACKENDS` (:func:`resolve_backend`): ``"auto"``
            (PyAV), ``"pyav"``, ``"torchcodec"``, ``"torchcodec-cuda"`` (frames on the GPU) or
            ``"auto-cuda"`` (on the GPU when possible, else on the CPU). Frame folders are read
            on the CPU whatever the backend.
        fps: frame rate of a frame folder (default 24, the Charades RGB frames); ignored for files,
            whose own rate is read from the container.
        threads: FFmpeg decoding threads for files on the CPU (default 1, one per DataLoader worker).
        device: the CUDA device of the GPU backends (default the current one).

    Returns:
        a :class:`FrameSource`. Raises :class:`DataError` naming the path when it cannot be used,
        :class:`ConfigError` for a backend that cannot work here.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return FrameFolderSource(path, fps=fps)
    if not os.path.exists(path):
        raise DataError(f"{path}: video file or frame folder not found")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    decoder, dev = resolve_backend(backend, device=device)
    if decoder == "pyav":
        return PyAVSource(path, threads=threads)
    return TorchCodecSource(path, threads=threads, device=dev)
