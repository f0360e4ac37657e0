"""Damage a valid dataset the ways real datasets are damaged: the bad-input corpus of the tests.

Each function damages files in place (on a copy: the tests copy a synthetic dataset first) and
returns the path that a correct reader must name in its error. Used by
``tests/test_bad_input_corpus.py``, which checks every kind of damage against the readers, the
commands and ``on_error="skip"``; usable on a copy of your own data to see how your pipeline
reacts::

    from strg.data import corrupt
    corrupt.cut(copy / "videos/a.mp4", 0.25)      # a download that stopped at a quarter

Kinds of damage:

* video files (:data:`VIDEO_DAMAGE`): cut at several points, zero bytes, a container header
  without frames, another format under the name (a PNG renamed ``.mp4``), random bytes;
* frame folders: a missing frame (:func:`drop_frame`), an unreadable JPEG (:func:`break_image`);
* annotation files: every malformed line of each format, as text edits
  (:data:`CHARADES_CSV_DAMAGE`, :data:`CHARADES_CLASSES_DAMAGE`, :data:`CLASS_LIST_DAMAGE`,
  :data:`SOMETHING_V1_DAMAGE`, :data:`SOMETHING_V2_DAMAGE`, :data:`SOMETHING_V2_LABELS_DAMAGE`,
  :data:`SOMETHING_ELSE_DAMAGE`, :data:`MANIFEST_CSV_DAMAGE`, :data:`MANIFEST_JSONL_DAMAGE`);
* proposals stores: records with invalid boxes or inconsistent arrays written past the
  store's own checks, as another tool could (:func:`damage_store_record`);
* checkpoints: cut, another type, missing keys (:data:`CHECKPOINT_DAMAGE`).
"""

from __future__ import annotations

import io
import json
import math
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np

PathLike = str | os.PathLike

# ----------------------------------------------------------------------------------------------
# files


def cut(path: PathLike, fraction: float) -> Path:
    """Keep the first ``fraction`` of the file's bytes (an interrupted download or copy)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def zero_bytes(path: PathLike) -> Path:
    Path(path).write_bytes(b"")
    return Path(path)


def random_bytes(path: PathLike, n: int = 4096, seed: int = 0) -> Path:
    Path(path).write_bytes(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes())
    return Path(path)


def header_only(path: PathLike) -> Path:
    """A valid container header of the same format with no frame in it."""
    import av

    path = Path(path)
    codec = "libvpx-vp9" if path.suffix == ".webm" else "libx264"
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=24)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        c.start_encoding()
    return path


def png_renamed(path: PathLike) -> Path:
    """A PNG image written under the video's name (wrong container)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buf, format="PNG")
    Path(path).write_bytes(buf.getvalue())
    return Path(path)


#: name -> damage of a video file
VIDEO_DAMAGE: dict[str, Callable[[PathLike], Path]] = {
    "cut_at_10%": lambda p: cut(p, 0.10),
    "cut_at_25%": lambda p: cut(p, 0.25),
    "cut_at_50%": lambda p: cut(p, 0.50),
    "cut_at_64%": lambda p: cut(p, 0.64),
    "cut_at_80%": lambda p: cut(p, 0.80),
    "cut_to_64_bytes": lambda p: cut(p, 64 / max(os.path.getsize(p), 64)),
    "zero_bytes": zero_bytes,
    "header_only": header_only,
    "png_renamed": png_renamed,
    "random_bytes": random_bytes,
}


def drop_frame(folder: PathLike, index: int) -> Path:
    """Delete the ``index``-th image (in name order) of a frame folder; returns the folder."""
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith((".jpg", ".jpeg", ".png")))
    os.remove(os.path.join(folder, files[index]))
    return Path(folder)


def break_image(path: PathLike, how: str = "cut") -> Path:
    """An unreadable image: ``"cut"`` keeps its first half, ``"garbage"`` overwrites it."""
    return cut(path, 0.5) if how == "cut" else random_bytes(path, 2048)


# ----------------------------------------------------------------------------------------------
# annotation files: name -> (text -> damaged text, the 1-based line or the id the error must name)
# Each edit applies to a valid file of that format with at least two entries.


def _lines(f: Callable[[list[str]], list[str]]) -> Callable[[str], str]:
    return lambda text: "\n".join(f(text.rstrip("\n").split("\n"))) + "\n"


def _row(i: int, f: Callable[[list[str]], list[str]]) -> Callable[[str], str]:
    """Edit the CSV fields of line ``i`` (0-based, 0 = header); quotes are not handled, so the
    edited line must have none (the synthetic CSVs quote nothing)."""

    def edit(lines: list[str]) -> list[str]:
        lines[i] = ",".join(f(lines[i].split(",")))
        return lines

    return _lines(edit)


def _set(i: int, value: str) -> Callable[[list[str]], list[str]]:
    def f(fields):
        fields[i] = value
        return fields

    return f


#: Charades v1 CSV (``id,subject,...,actions,length``; actions is field 9)
CHARADES_CSV_DAMAGE: dict[str, tuple[Callable[[str], str], str]] = {
    "missing_last_column": (_row(2, lambda f: f[:-1]), ":3"),
    "missing_actions_and_length": (_row(2, lambda f: f[:-2]), ":3"),
    "extra_field": (_row(2, lambda f: [*f, "x"]), ":3"),
    "action_two_parts": (_row(2, _set(9, "c000 1.0")), ":3"),
    "action_not_a_number": (_row(2, _set(9, "c000 a 2")), ":3"),
    "action_ends_before_start": (_row(2, _set(9, "c000 2 1")), ":3"),
    "action_nan_time": (_row(2, _set(9, "c000 nan 1")), ":3"),
    "unknown_class": (_row(2, _set(9, "c999 0 1")), ":3"),
    "empty_id": (_row(2, _set(0, "")), ":3"),
    "duplicate_id": (_lines(lambda ls: [*ls, ls[1]]), "appears twice"),
    "header_without_actions": (_row(0, _set(9, "acts")), ":1"),
    "unclosed_quote": (_lines(lambda ls: [*ls[:2], ls[2].replace(",", ',"', 1)]), ":"),
    "not_utf8": (lambda t: t + "\udcff", ""),  # written with surrogateescape: an invalid byte
    "empty_file": (lambda t: "", ""),
}

#: Charades classes file (``c000 Class name``)
CHARADES_CLASSES_DAMAGE: dict[str, tuple[Callable[[str], str], str]] = {
    "id_without_name": (_lines(lambda ls: [ls[0], ls[1].split(" ")[0], *ls[2:]]), ":2"),
    "duplicate_id": (_lines(lambda ls: [ls[0], ls[0].split(" ")[0] + " Other", *ls[2:]]), ":2"),
    "empty_file": (lambda t: "", "no classes"),
}

#: one class name per line (Something-Something v1 labels, manifest classes file)
CLASS_LIST_DAMAGE: dict[str, tuple[Callable[[str], str], str]] = {
    "duplicate_class": (_lines(lambda ls: [*ls, ls[0]]), "unique"),
    "empty_file": (lambda t: "", ""),
}

#: Something-Something v1 CSV (``id;label``) of a labelled split
SOMETHING_V1_DAMAGE: dict[str, tuple[Callable[[str], str], str]] = {
    "no_label": (_lines(lambda ls: [ls[0], ls[1].split(";")[0], *ls[2:]]), ":2"),
    "extra_field": (_lines(lambda ls: [ls[0], ls[1] + ";x", *ls[2:]]), ":2"),
    "unknown_class": (_lines(lambda ls: [ls[0], ls[1].split(";")[0] + ";Flying", *ls[2:]]), ":2"),
    "no_id": (_lines(lambda ls: [ls[0], ";" + ls[1].split(";")[1], *ls[2:]]), ":2"),
    "duplicate_id": (_lines(lambda ls: [*ls, ls[0]]), "appears twice"),
    "empty_file": (lambda t: "", ""),
}


def _json_edit(f: Callable) -> Callable[[str], str]:
    def edit(text: str) -> str:
        obj = json.loads(text)
        out = f(obj)
        return out if isinstance(out, str) else json.dumps(obj if out is None else out)

    return edit


def _entry(i: int, f: Callable[[dict], object]) -> Callable[[str], str]:
    def g(entries: list) -> None:
        f(entries[i])

    return _json_edit(g)


#: Something-Something v2 JSON (a list of ``{"id", "label", "template", "placeholders"}``)
SOMETHING_V2_DAMAGE: dict[str, tuple[Callable[[str], str], str]] = {
    "invalid_json": (lambda t: t.rstrip().rstrip("]") + ",]", ":"),
    "not_a_list": (_json_edit(lambda e: {"videos": e}), ""),
    "entry_without_id": (_entry(1, lambda e: e.pop("id")), "entry 1"),
    "entry_without_template": (_entry(1, lambda e: e.pop("template")), "id "),
    "template_not_a_string": (_entry(1, lambda e: e.update(template=7)), "id "),
    "unknown_template": (_entry(1, lambda e: e.update(template="Flying [something]")), "id "),
    "duplicate_id": (_json_edit(lambda e: e.append(dict(e[0]))), "appears twice"),
    "empty_list": (lambda t: "[]", ""),
}

#: Something-Something v2 labels JSON (``{"template": "index"}``)
SOMETHING_V2_LABELS_DAMAGE: dict[str, tuple[Callable[[str], str], str]] = {
    "index_not_a_number": (_json_edit(lambda d: d.update({next(iter(d)): "x"})), "not an integer"),
    "index_repeated": (_json_edit(lambda d: {k: "0" for k in d}), "out of range or repeated"),
    "not_an_object": (_json_edit(lambda d: list(d)), ""),
}


def _se_frame(f: Callable[[dict], object]) -> Callable[[str], str]:
    """Edit the first frame entry of the first video of a Something-Else file."""

    def g(d: dict) -> None:
        f(d[next(iter(d))][0])

    return _json_edit(g)


def _se_box(key: str, value) -> Callable[[str], str]:
    return _se_frame(lambda fr: fr["labels"][0]["box2d"].update({key: value}))


#: Something-Else box JSON (``{video_id: [{"name", "labels": [{"box2d": {...}}]}]}``); the error
#: must name the file and the first video's id
SOMETHING_ELSE_DAMAGE: dict[str, tuple[Callable[[str], str], str]] = {
    "invalid_json": (lambda t: t[: len(t) // 2], ":"),
    "not_an_object": (_json_edit(lambda d: list(d.values())), ""),
    "frames_not_a_list": (_json_edit(lambda d: d.update({next(iter(d)): {"name": "x"}})), "video"),
    "frame_without_name": (_se_frame(lambda fr: fr.pop("name")), "video"),
    "frame_name_without_number": (_se_frame(lambda fr: fr.update(name="a/first.jpg")), "video"),
    "labels_not_a_list": (_se_frame(lambda fr: fr.update(labels={"box2d": {}})), "video"),
    "label_without_box": (_se_frame(lambda fr: fr["labels"][0].pop("box2d")), "video"),
    "coordinate_not_a_number": (_se_box("x1", "left"), "video"),
    "coordinate_nan": (_se_box("x2", math.nan), "video"),
    "coordinate_infinite": (_se_box("y2", math.inf), "video"),
    "x2_before_x1": (_se_box("x2", -5.0), "video"),
    "duplicate_frame": (_json_edit(lambda d: d[next(iter(d))].append(dict(d[next(iter(d))][0]))), "appears twice"),
}

#: manifest CSV (``path,labels``) read for training
MANIFEST_CSV_DAMAGE: dict[str, tuple[Callable[[str], str], str]] = {
    "no_path_column": (_row(0, _set(0, "file")), ":1"),
    "missing_labels_field": (_row(2, lambda f: f[:1]), ":3"),
    "empty_labels": (_row(2, lambda f: [f[0], ""]), ":3"),
    "extra_field": (_row(2, lambda f: [*f, "x"]), ":3"),
    "unknown_class": (_row(2, _set(1, "Flying")), ":3"),
    "empty_path": (_row(2, _set(0, "")), ":3"),
    "bad_start": (_lines(lambda ls: [ls[0] + ",start", *(line + ",soon" for line in ls[1:])]), ":2"),
    "end_before_start": (_lines(lambda ls: [ls[0] + ",start,end", *(line + ",2,1" for line in ls[1:])]), ":2"),
    "duplicate_id": (_lines(lambda ls: [*ls, ls[1]]), "appears twice"),
}

#: manifest JSON Lines read for training
MANIFEST_JSONL_DAMAGE: dict[str, tuple[Callable[[str], str], str]] = {
    "invalid_json_line": (_lines(lambda ls: [ls[0], ls[1][:-3], *ls[2:]]), ":2"),
    "not_an_object": (_lines(lambda ls: [ls[0], "[1, 2]", *ls[2:]]), ":2"),
    "no_path": (_lines(lambda ls: [ls[0], json.dumps({"labels": json.loads(ls[1])["labels"]}), *ls[2:]]), ":2"),
    "no_labels": (_lines(lambda ls: [ls[0], json.dumps({"path": json.loads(ls[1])["path"]}), *ls[2:]]), ":2"),
    "unknown_class": (_lines(lambda ls: [ls[0], json.dumps({**json.loads(ls[1]), "labels": ["Flying"]}),
                                         *ls[2:]]), ":2"),  # fmt: skip
}


def apply_text_damage(path: PathLike, edit: Callable[[str], str]) -> Path:
    """Rewrite a text file with ``edit`` (invalid bytes kept via surrogateescape)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    path.write_bytes(edit(text).encode("utf-8", errors="surrogateescape"))
    return path


# ----------------------------------------------------------------------------------------------
# proposals stores: damage one record with plain SQL, past ProposalStore.put's checks


def _boxes_edit(f: Callable[[np.ndarray], None]) -> Callable[[dict], None]:
    def edit(row: dict) -> None:
        boxes = np.frombuffer(row["boxes"], dtype="<f4").reshape(row["num_stored"], row["k"], 4).copy()
        f(boxes)
        row["boxes"] = boxes.astype("<f4").tobytes()

    return edit


def _first_box(i: int, value: float) -> Callable[[np.ndarray], None]:
    def f(b: np.ndarray) -> None:
        b[0, 0, i] = value

    return f


#: name -> edit of a ``videos`` row (a dict of its columns); the first box of the first frame
#: must be a real one
STORE_DAMAGE: dict[str, Callable[[dict], None]] = {
    "x2_before_x1": _boxes_edit(lambda b: b[0, 0].__setitem__(2, b[0, 0, 0] - 1.0)),
    "nan_coordinate": _boxes_edit(_first_box(1, math.nan)),
    "infinite_coordinate": _boxes_edit(_first_box(3, math.inf)),
    "outside_the_frame": _boxes_edit(_first_box(2, 1e4)),
    "negative_coordinate": _boxes_edit(_first_box(0, -50.0)),
    "more_boxes_than_k": lambda r: r.update(num_boxes=np.full(r["num_stored"], r["k"] + 1, "<i8").tobytes()),
    "truncated_blob": lambda r: r.update(boxes=r["boxes"][:-4]),
    "frames_not_sorted": lambda r: r.update(frames=np.frombuffer(r["frames"], "<i8")[::-1].copy().tobytes()),
}


def damage_store_record(store: PathLike, video_id: str, edit: Callable[[dict], None]) -> Path:
    """Apply ``edit`` to the row of ``video_id`` in a proposals store (plain SQL)."""
    cols = ["num_stored", "k", "height", "width", "fps", "frames", "boxes", "scores", "num_boxes"]
    with sqlite3.connect(os.fspath(store)) as conn:
        values = conn.execute(f"SELECT {', '.join(cols)} FROM videos WHERE video_id = ?", (video_id,)).fetchone()
        if values is None:
            raise KeyError(video_id)
        row = dict(zip(cols, values))
        edit(row)
        conn.execute(f"UPDATE videos SET {', '.join(c + ' = ?' for c in cols)} WHERE video_id = ?",
                     (*(row[c] for c in cols), video_id))  # fmt: skip
    conn.close()
    return Path(store)


# ----------------------------------------------------------------------------------------------
# checkpoints


def _torch_edit(f: Callable[[dict], object]) -> Callable[[PathLike], Path]:
    def edit(path: PathLike) -> Path:
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        out = f(obj)
        torch.save(obj if out is None else out, path)
        return Path(path)

    return edit


def _drop_model_key(ckpt: dict) -> None:
    state = ckpt["model"]
    del state[sorted(state)[0]]


#: name -> damage of a checkpoint written by ``strg train``
CHECKPOINT_DAMAGE: dict[str, Callable[[PathLike], Path]] = {
    "cut_at_50%": lambda p: cut(p, 0.5),
    "cut_to_100_bytes": lambda p: cut(p, 100 / max(os.path.getsize(p), 100)),
    "zero_bytes": zero_bytes,
    "text_file": lambda p: (Path(p).write_text("not a checkpoint\n"), Path(p))[1],
    "a_list": _torch_edit(lambda c: [1, 2, 3]),
    "model_not_a_dict": _torch_edit(lambda c: {**c, "model": [1, 2]}),
    "missing_model_key": _torch_edit(_drop_model_key),
    "tensor_of_wrong_shape": _torch_edit(
        lambda c: c["model"].update({k: v[..., :1] for k, v in c["model"].items() if v.ndim > 1 and v.shape[-1] > 1})
    ),
}
