"""The proposals store: per video, the region boxes of some of its frames, in one SQLite file.

Why SQLite and not HDF5 (the field's usual choice):

* **Crash safety.** Every :meth:`ProposalStore.put` is one SQLite transaction, so a killed
  extraction (Ctrl-C, OOM killer, a preempted cluster job) loses at most the video in progress and
  the file stays valid; rerunning skips the videos already present (``video_id in store``). An
  HDF5 file whose writer is killed mid-write is commonly left unreadable unless SWMR mode is
  used, and SWMR forbids creating new datasets (one per video) while readers are open.
* **Concurrent readers.** Many DataLoader worker processes read one file at the same time, each
  with its own connection opened lazily in that process (a connection is never shared across a
  ``fork``). h5py handles opened before a fork are not safe to use in the children.
* **Random access by video id** through the primary-key index, and **standard library only**
  (``sqlite3``), one ordinary file to copy around, readable from any language.

Layout (one row per video; arrays are little-endian raw bytes)::

    meta(key TEXT PRIMARY KEY, value TEXT)             -- format version
    videos(video_id TEXT PRIMARY KEY, num_stored INT, k INT, height INT, width INT, fps REAL,
           frames BLOB int64[F], boxes BLOB float32[F, K, 4], scores BLOB float32[F, K],
           num_boxes BLOB int64[F])

Boxes are ``x1 y1 x2 y2`` in pixels of the original frame (``frame_size = (height, width)``).
Within each frame they are stored sorted by score, highest first, so "the best K" is a slice.
``frames`` are the 0-based indices of the frames that carry proposals, in the time base of
``fps`` (the frame rate of the frames the proposals were computed on, ``None`` if unknown); a
frame ``height`` or ``width`` of 0 means unknown (Something-Else gives only the height).
"""

from __future__ import annotations

import math
import os
import sqlite3
import urllib.parse
from collections.abc import Iterator, Sequence

import numpy as np

from strg.errors import DataError

FORMAT_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS videos (
    video_id TEXT PRIMARY KEY,
    num_stored INTEGER NOT NULL,
    k INTEGER NOT NULL,
    height INTEGER NOT NULL,
    width INTEGER NOT NULL,
    fps REAL,
    frames BLOB NOT NULL,
    boxes BLOB NOT NULL,
    scores BLOB NOT NULL,
    num_boxes BLOB NOT NULL
);
"""

#: how far (pixels) a stored box may stick out of its frame before it is rejected
BOX_TOLERANCE = 1e-3

__all__ = ["ProposalStore", "select_boxes", "validate_boxes"]


def validate_boxes(
    boxes: np.ndarray,
    valid: np.ndarray,
    frame_size: tuple[int, int],
    *,
    where: str,
    frames: np.ndarray | None = None,
) -> None:
    """Raise DataError for a real box that is not finite, has x2 < x1 or y2 < y1, or lies outside
    the frame (by more than :data:`BOX_TOLERANCE` pixels).

    Args:
        boxes (float[F, K, 4] or float[..., 4]): x1 y1 x2 y2 in pixels.
        valid (bool[F, K] or bool[...]): which boxes are real (padding is not checked).
        frame_size: (height, width); a 0 entry means unknown and is not checked.
        where: names the file / video for the message.
        frames (int[F]): frame indices of the rows, named in the message.
    """
    b = np.asarray(boxes, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    if not valid.any():
        return
    h, w = frame_size
    tol = BOX_TOLERANCE
    with np.errstate(invalid="ignore"):
        problems = (
            (~np.isfinite(b).all(axis=-1), "is not finite"),
            ((b[..., 2] < b[..., 0]) | (b[..., 3] < b[..., 1]), "has x2 < x1 or y2 < y1"),
            ((b[..., :2] < -tol).any(axis=-1) | (b[..., 2] > (w if w > 0 else np.inf) + tol)
             | (b[..., 3] > (h if h > 0 else np.inf) + tol), f"lies outside the {w}x{h} frame"),
        )  # fmt: skip
    for bad, what in problems:
        bad &= valid
        if bad.any():
            pos = tuple(int(i) for i in np.argwhere(bad)[0])
            at = ""
            if frames is not None and b.ndim == 3:
                at = f" frame {int(np.asarray(frames).reshape(-1)[pos[0]])}:"
            raise DataError(f"{where}:{at} box {b[pos].tolist()} {what}")


class ProposalStore:
    """Read and write region proposals, one SQLite file per dataset (see the module docstring).

    Args:
        path: the store file.
        mode: ``"r"`` read-only (the file must exist), ``"a"`` read/write (created if missing),
            ``"w"`` a new store that replaces ``path`` only when it is closed without error:
            it is written to a temporary file next to ``path`` (``.<name>.<pid>.tmp``), then
            checked and renamed over ``path`` by :meth:`close` (atomic), so a failed write never
            leaves ``path`` empty or half-written. Leaving a ``with`` block by an exception, or
            :meth:`discard`, deletes the temporary file and keeps ``path`` as it was.

    Every record read back is checked (:meth:`get`): boxes written by other tools that are not
    finite, have ``x2 < x1`` or lie outside the frame raise DataError naming the store, the video
    and the frame, as :meth:`put` refuses them.

    The connection is opened on first use in each process, so a store built in the main process
    can be handed to DataLoader workers (fork or spawn) and pickled.
    """

    def __init__(self, path: str | os.PathLike, mode: str = "r") -> None:
        if mode not in ("r", "a", "w"):
            raise ValueError(f"mode must be 'r', 'a' or 'w', not {mode!r}")
        self.path = os.fspath(path)
        self.mode = mode
        if mode == "r" and not os.path.isfile(self.path):
            raise DataError(f"{self.path}: proposals store not found")
        if os.path.isdir(self.path):
            raise DataError(f"{self.path}: is a folder, not a proposals store")
        if mode != "r" and not os.path.isdir(os.path.dirname(os.path.abspath(self.path))):
            raise DataError(f"{self.path}: its folder does not exist")
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._in_batch = False
        self._checked: set[str] = set()  # videos whose boxes were checked on reading (mode "r")
        self._file = self.path  # the file SQLite works on: a temporary one in mode "w"
        if mode == "w":
            head, name = os.path.split(os.path.abspath(self.path))
            self._file = os.path.join(head, f".{name}.{os.getpid()}.tmp")
            _remove(self._file)
        if mode == "r" or (mode == "a" and os.path.isfile(self.path) and os.path.getsize(self.path) > 0):
            self._check_readable()  # never add our tables to a file that is something else
        if mode != "r":
            self._connection()  # create the file and schema now, not at the first put

    # -- connection ----------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            # a connection inherited through fork must not be used: open our own
            self._conn = None
            try:
                if self.mode == "r":
                    # read/write handle when allowed, so that a hot journal left by a killed
                    # writer is rolled back; query_only keeps this connection from writing
                    access = "rw" if os.access(self._file, os.W_OK) else "ro"
                    uri = f"file:{urllib.parse.quote(os.path.abspath(self._file))}?mode={access}"
                    conn = sqlite3.connect(uri, uri=True, timeout=60.0)
                    conn.execute("PRAGMA query_only = 1")
                else:
                    conn = sqlite3.connect(self._file, timeout=60.0)
                    conn.executescript(_SCHEMA)
                    conn.execute("INSERT OR IGNORE INTO meta VALUES ('format_version', ?)", (FORMAT_VERSION,))
                    conn.commit()
            except sqlite3.DatabaseError as e:
                raise DataError(f"{self.path}: not a proposals store ({e})") from e
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _check_readable(self) -> None:
        try:
            if self.mode == "r":
                conn = self._connection()
            else:  # "a" on an existing file: look before writing anything (rw: a hot journal
                # left by a killed writer is rolled back, as in mode "r")
                access = "rw" if os.access(self._file, os.W_OK) else "ro"
                uri = f"file:{urllib.parse.quote(os.path.abspath(self._file))}?mode={access}"
                conn = sqlite3.connect(uri, uri=True, timeout=60.0)
                conn.execute("PRAGMA query_only = 1")
            try:
                row = conn.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
            finally:
                if conn is not self._conn:
                    conn.close()
        except sqlite3.DatabaseError as e:
            self.close()
            raise DataError(f"{self.path}: not a proposals store ({e})") from e
        if row is None or row[0] != FORMAT_VERSION:
            self.close()
            raise DataError(f"{self.path}: unsupported proposals store version {row and row[0]!r}")

    def close(self) -> None:
        """Commit and close. In mode ``"w"``: check the new store, then rename it over ``path``."""
        if self._conn is not None and self._pid == os.getpid():
            if self.mode != "r":
                self._conn.commit()
            self._conn.close()
        self._conn = None
        if self.mode == "w" and self._file != self.path and self._pid == os.getpid():
            self._publish()

    def _publish(self) -> None:
        """Mode "w": the finished temporary file replaces ``path`` (atomic rename)."""
        try:
            conn = sqlite3.connect(self._file)
            try:
                ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
            finally:
                conn.close()
        except sqlite3.DatabaseError as e:
            ok = str(e)
        if ok != "ok":
            self.discard()
            raise DataError(f"{self.path}: the new store failed its integrity check ({ok}); the file was not changed")
        os.replace(self._file, self.path)
        _fsync_dir(self.path)
        self._file = self.path
        self.mode = "a"

    def discard(self) -> None:
        """Drop what was not committed; in mode ``"w"`` delete the temporary file, so ``path``
        stays as it was."""
        if self._conn is not None and self._pid == os.getpid():
            self._conn.rollback()
            self._conn.close()
        self._conn = None
        if self.mode == "w" and self._file != self.path:
            _remove(self._file)
            _remove(self._file + "-journal")

    def __enter__(self) -> ProposalStore:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_conn"], state["_pid"] = None, None
        return state

    # -- writing -------------------------------------------------------------------------------

    def put(
        self,
        video_id: str,
        *,
        frames: np.ndarray,
        boxes: np.ndarray,
        scores: np.ndarray,
        num_boxes: np.ndarray,
        frame_size: tuple[int, int],
        fps: float | None = None,
    ) -> None:
        """Store (or replace) the proposals of one video in one transaction.

        Args:
            video_id: the video's id.
            frames (int64[F]): 0-based indices of the frames that carry proposals (unique).
            boxes (float32[F, K, 4]): x1 y1 x2 y2 in pixels of the original frame.
            scores (float32[F, K]): box scores; rows are re-sorted by score, highest first.
            num_boxes (int64[F]): real boxes per frame (the first ``num_boxes[f]`` of row ``f``
                before sorting; the rest is padding).
            frame_size: (height, width) of the frames the boxes are in (0 = unknown).
            fps: frame rate of the frames ``frames`` counts (None = unknown).
        """
        if self.mode == "r":
            raise DataError(f"{self.path}: store opened read-only")
        where = f"{self.path}: video {video_id!r}"
        frames = np.asarray(frames, dtype=np.int64).reshape(-1)
        boxes = np.asarray(boxes, dtype=np.float32)
        scores = np.asarray(scores, dtype=np.float32)
        num_boxes = np.asarray(num_boxes, dtype=np.int64).reshape(-1)
        f = frames.shape[0]
        if boxes.ndim != 3 or boxes.shape[0] != f or boxes.shape[2] != 4:
            raise DataError(f"{where}: boxes must be (F={f}, K, 4), got {tuple(boxes.shape)}")
        k = boxes.shape[1]
        if scores.shape != (f, k) or num_boxes.shape != (f,):
            raise DataError(f"{where}: scores must be ({f}, {k}) and num_boxes ({f},)")
        if ((num_boxes < 0) | (num_boxes > k)).any():
            raise DataError(f"{where}: num_boxes must lie in [0, {k}]")
        if (frames < 0).any():
            raise DataError(f"{where}: negative frame index")
        order = np.argsort(frames, kind="stable")
        frames, boxes, scores, num_boxes = frames[order], boxes[order], scores[order], num_boxes[order]
        if (np.diff(frames) == 0).any():
            raise DataError(f"{where}: frame {int(frames[np.argmax(np.diff(frames) == 0)])} appears twice")
        h, w = (int(x) for x in frame_size)
        valid = np.arange(k)[None, :] < num_boxes[:, None]  # (F, K)
        validate_boxes(boxes, valid, (h, w), where=where, frames=frames)
        # highest score first within each frame; padding sorts last (docs/model.md: K best)
        key = np.where(valid, -scores.astype(np.float64), np.inf)
        rank = np.argsort(key, axis=1, kind="stable")  # (F, K)
        boxes = np.take_along_axis(boxes, rank[..., None], axis=1)
        scores = np.take_along_axis(np.where(valid, scores, 0.0).astype(np.float32), rank, axis=1)
        boxes[~(np.arange(k)[None, :] < num_boxes[:, None])] = 0.0
        row = (
            str(video_id), f, k, h, w, None if fps is None else float(fps),
            frames.astype("<i8").tobytes(), boxes.astype("<f4").tobytes(),
            scores.astype("<f4").tobytes(), num_boxes.astype("<i8").tobytes(),
        )  # fmt: skip
        conn = self._connection()
        conn.execute("INSERT OR REPLACE INTO videos VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        if not self._in_batch:
            conn.commit()

    def batch(self) -> _Batch:
        """Group many puts into one transaction (fast bulk import)::

            with store.batch():
                for ...: store.put(...)
        """
        return _Batch(self)

    # -- reading -------------------------------------------------------------------------------

    def __contains__(self, video_id: object) -> bool:
        cur = self._connection().execute("SELECT 1 FROM videos WHERE video_id = ?", (str(video_id),))
        return cur.fetchone() is not None

    def __len__(self) -> int:
        return int(self._connection().execute("SELECT COUNT(*) FROM videos").fetchone()[0])

    def keys(self) -> list[str]:
        """Video ids in the store, sorted."""
        return [r[0] for r in self._connection().execute("SELECT video_id FROM videos ORDER BY video_id")]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def get(self, video_id: str) -> dict:
        """The record of one video: ``frames`` int64[F], ``boxes`` float32[F, K, 4] (score order),
        ``scores`` float32[F, K], ``num_boxes`` int64[F], ``frame_size`` (h, w), ``fps`` float | None.

        Raises DataError naming the store and the id when the video has no entry, and naming the
        frame when the record is damaged or holds an invalid box (:func:`validate_boxes`): a
        store written by another tool is held to what :meth:`put` accepts.
        """
        try:
            cur = self._connection().execute(
                "SELECT num_stored, k, height, width, fps, frames, boxes, scores, num_boxes FROM videos "
                "WHERE video_id = ?",
                (str(video_id),),
            )
            row = cur.fetchone()
        except sqlite3.DatabaseError as e:
            raise DataError(f"{self.path}: cannot read the proposals of video {video_id!r} ({e})") from e
        if row is None:
            raise DataError(f"{self.path}: no proposals for video {video_id!r}")
        vid = str(video_id)
        rec = _decode_record(row, where=f"{self.path}: video {video_id!r}", check_boxes=vid not in self._checked)
        if self.mode == "r":  # a read-only store does not change: check each video once per process
            self._checked.add(vid)
        return rec

    def boxes_at(
        self,
        video_id: str,
        frame_indices: Sequence[int] | np.ndarray,
        max_boxes: int,
        tolerance: float | None = None,
        *,
        record: dict | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The best ``max_boxes`` proposals of each wanted frame.

        A frame without proposals of its own takes those of the nearest stored frame when it is at
        most ``tolerance`` frames away (default: half the median interval between stored frames,
        0 when only one frame is stored); beyond that it gets an empty, masked set, never the
        boxes of a distant frame. Ties go to the earlier stored frame.

        Args:
            video_id: the video.
            frame_indices (int[T]): frame indices in the store's time base.
            max_boxes: K.
            tolerance: in frames; None for the default.
            record: an already fetched :meth:`get` result (saves a query).

        Returns:
            boxes (float32[T, K, 4]) in pixels of the stored frame size, zeros where masked;
            mask (bool[T, K]), True for real boxes.
        """
        rec = record if record is not None else self.get(video_id)
        return select_boxes(rec, frame_indices, max_boxes, tolerance)


def select_boxes(
    rec: dict, frame_indices: Sequence[int] | np.ndarray, max_boxes: int, tolerance: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`ProposalStore.boxes_at` on a record from :meth:`ProposalStore.get`."""
    want = np.asarray(frame_indices, dtype=np.int64).reshape(-1)  # (T,)
    frames = rec["frames"]  # (F,) sorted
    t, k = want.shape[0], int(max_boxes)
    boxes = np.zeros((t, k, 4), dtype=np.float32)
    mask = np.zeros((t, k), dtype=bool)
    if frames.size == 0 or t == 0:
        return boxes, mask
    if tolerance is None:
        tolerance = 0.5 * float(np.median(np.diff(frames))) if frames.size > 1 else 0.0
    # nearest stored frame: compare the neighbours on both sides (ties -> the earlier one)
    right = np.clip(np.searchsorted(frames, want, side="left"), 0, frames.size - 1)
    left = np.clip(right - 1, 0, frames.size - 1)
    d_left, d_right = np.abs(want - frames[left]), np.abs(frames[right] - want)
    src = np.where(d_left <= d_right, left, right)  # (T,)
    ok = np.minimum(d_left, d_right) <= tolerance  # (T,)
    kk = min(k, rec["boxes"].shape[1])
    boxes[:, :kk] = rec["boxes"][src, :kk]
    mask[:, :kk] = np.arange(kk)[None, :] < rec["num_boxes"][src][:, None]
    mask &= ok[:, None]
    boxes[~mask] = 0.0
    return boxes, mask


def _decode_record(row: tuple, *, where: str, check_boxes: bool = True) -> dict:
    """A ``videos`` row as arrays, checked as :meth:`ProposalStore.put` checks what it writes
    (the boxes only when ``check_boxes``)."""
    f, k, h, w, fps, fb, bb, sb, nb = row
    try:
        f, k, h, w = int(f), int(k), int(h), int(w)
        rec = {
            "frames": np.frombuffer(fb, dtype="<i8").astype(np.int64),
            "boxes": np.frombuffer(bb, dtype="<f4").reshape(f, k, 4).astype(np.float32),
            "scores": np.frombuffer(sb, dtype="<f4").reshape(f, k).astype(np.float32),
            "num_boxes": np.frombuffer(nb, dtype="<i8").astype(np.int64),
            "frame_size": (h, w),
            "fps": None if fps is None else float(fps),
        }
    except (TypeError, ValueError) as e:  # blobs of the wrong length or type
        raise DataError(f"{where}: damaged record ({e})") from e
    frames, num = rec["frames"], rec["num_boxes"]
    if frames.shape != (f,) or num.shape != (f,) or h < 0 or w < 0:
        raise DataError(f"{where}: damaged record ({frames.size} frame indices, {num.size} box counts for {f} frames)")
    if (frames < 0).any() or (np.diff(frames) <= 0).any():
        raise DataError(f"{where}: frame indices must be increasing and >= 0")
    if ((num < 0) | (num > k)).any():
        bad = int(np.argmax((num < 0) | (num > k)))
        raise DataError(f"{where}: frame {int(frames[bad])}: {int(num[bad])} boxes, not in [0, {k}]")
    if fps is not None and not (math.isfinite(rec["fps"]) and rec["fps"] > 0):
        raise DataError(f"{where}: frame rate {fps!r} is not a positive number")
    if check_boxes:
        valid = np.arange(k)[None, :] < num[:, None]  # (F, K)
        validate_boxes(rec["boxes"], valid, (h, w), where=where, frames=frames)
    return rec


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _fsync_dir(path: str) -> None:
    """Make a rename in ``path``'s folder durable (not possible on every file system)."""
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


class _Batch:
    def __init__(self, store: ProposalStore) -> None:
        self.store = store

    def __enter__(self) -> ProposalStore:
        self.store._connection()
        self.store._in_batch = True
        return self.store

    def __exit__(self, exc_type, *exc) -> None:
        self.store._in_batch = False
        conn = self.store._connection()
        if exc_type is None:
            conn.commit()
        else:
            conn.rollback()
