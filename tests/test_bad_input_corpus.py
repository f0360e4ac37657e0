"""The bad-input corpus: every kind of damage of strg.data.corrupt applied to a copy of a valid
synthetic dataset, and for each the outcome a user gets: a DataError / CheckpointError naming the
file (and line, entry or video), or a counted skip with ``on_error="skip"``; and, for every case,
no existing file changed (hashes of the whole folder before and after)."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from strg.cli import main
from strg.data import build_dataset, corrupt
from strg.data.collate import make_collate
from strg.data.decode import torchcodec_available
from strg.data.proposals import ProposalStore
from strg.data.testing import index_frames, write_frame_folder
from strg.errors import CheckpointError, DataError
from strg.synth import class_names, generate_dataset

BACKENDS = ["pyav"] + (["torchcodec"] if torchcodec_available() else [])
SMALL = dict(num_frames=4, stride=1.0, stride_unit="frames", train_short_side=(32, 32), crop_size=32,
             test_short_side=32, test_clips=1, flip=False)
CLASSES = class_names()


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_unchanged(root: Path, before: dict, new_files_ok: bool = False) -> None:
    after = snapshot(root)
    changed = [k for k in before if after.get(k) != before[k]]
    assert not changed, f"files changed or removed: {changed}"
    if not new_files_ok:
        assert set(after) == set(before), f"new files: {sorted(set(after) - set(before))}"


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """Something-Something v2 (webm, labels, Something-Else boxes, store), Charades (mp4, CSVs),
    Something-Something v1 (frame folders) and manifests (CSV, JSON Lines): all valid."""
    root = tmp_path_factory.mktemp("clean")
    generate_dataset(root / "ss", seed=3, workers=1, num_videos=10, frames=24, size=32, progress=False)
    generate_dataset(root / "ch", seed=3, workers=1, num_videos=10, frames=24, size=32, variant="charades",
                     progress=False)
    v1 = root / "v1"
    v1.mkdir()
    (v1 / "something-something-v1-labels.csv").write_text("\n".join(CLASSES) + "\n")
    for i in (1, 2, 3):
        write_frame_folder(v1 / "20bn-something-something-v1" / str(i), index_frames(6, 32, 32))
    (v1 / "something-something-v1-train.csv").write_text(f"1;{CLASSES[0]}\n2;{CLASSES[1]}\n3;{CLASSES[0]}\n")
    ss = root / "ss"
    entries = json.loads((ss / "labels/something-something-v2-train.json").read_text())
    label = {e["id"]: e["template"].replace("[", "").replace("]", "") for e in entries}
    ids = list(label)[:3]
    (ss / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (ss / "train.csv").write_text("path,labels\n" + "".join(
        f"20bn-something-something-v2/{i}.webm,{label[i]}\n" for i in ids))
    (ss / "train.jsonl").write_text("".join(
        json.dumps({"path": f"20bn-something-something-v2/{i}.webm", "labels": [label[i]]}) + "\n" for i in ids))
    return root


@pytest.fixture
def data(clean, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(clean, root)
    return root


def _manifest_ds(root: Path, rows: list[str], **options):
    (root / "m.csv").write_text("path,labels\n" + "".join(r + ",a\n" for r in rows))
    (root / "c.txt").write_text("a\n")
    return build_dataset("manifest", split="val", manifest=str(root / "m.csv"), classes_file=str(root / "c.txt"),
                         **{**SMALL, "training": False, **options})


# ------------------------------------------------------------------------------------------------
# video files


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("damage", sorted(corrupt.VIDEO_DAMAGE))
@pytest.mark.parametrize("video", ["ss/20bn-something-something-v2/1.webm", "ch/Charades_v1/S0001.mp4"])
def test_damaged_video(data, video, damage, backend):
    bad = corrupt.VIDEO_DAMAGE[damage](data / video)
    good = next(p for p in bad.parent.iterdir() if p != bad)
    rows = [str(bad), str(good)]
    ds = _manifest_ds(data, rows, decode_backend=backend)
    before = snapshot(data)
    with pytest.raises(DataError) as e:
        ds[0]
    assert str(bad) in str(e.value)
    # evaluation with on_error=skip: the item is None, collate counts it
    ds = _manifest_ds(data, rows, decode_backend=backend, on_error="skip")
    batch = make_collate(0)([ds[0], ds[1]])
    assert batch["num_skipped"] == 1 and batch["clips"].shape[0] == 1
    # training: another video takes its place, counted
    ds = _manifest_ds(data, rows, decode_backend=backend, on_error="skip", training=True)
    torch.manual_seed(0)
    items = [ds[0] for _ in range(4)]
    assert all(it["video_id"] == good.stem for it in items) and all(it["num_skipped"] >= 1 for it in items)
    assert_unchanged(data, before)


@pytest.mark.parametrize("damage", ["drop_middle_frame", "drop_first_frame", "cut_jpeg", "garbage_jpeg"])
def test_damaged_frame_folder(data, damage):
    folder = data / "v1/20bn-something-something-v1/2"
    frame = folder / "00003.jpg"
    if damage.startswith("drop"):
        corrupt.drop_frame(folder, 2 if damage == "drop_middle_frame" else 0)
        named = str(folder)
    else:
        corrupt.break_image(frame, "cut" if damage == "cut_jpeg" else "garbage")
        named = str(frame)
    before = snapshot(data)
    ds = build_dataset("something_v1", split="train", training=False, root=str(data / "v1"), **SMALL)
    with pytest.raises(DataError, match=f"^{named}"):
        ds[1]
    ds = build_dataset("something_v1", split="train", training=False, root=str(data / "v1"), on_error="skip",
                       **SMALL)
    assert ds[1] is None and ds[0] is not None
    assert_unchanged(data, before)


# ------------------------------------------------------------------------------------------------
# annotation files

ANNOTATIONS = {  # format -> (damage table, file, build_dataset arguments)
    "charades_csv": (corrupt.CHARADES_CSV_DAMAGE, "ch/Charades_v1_train.csv", dict(kind="charades", root="ch")),
    "charades_classes": (corrupt.CHARADES_CLASSES_DAMAGE, "ch/Charades_v1_classes.txt",
                         dict(kind="charades", root="ch")),
    "something_v1_csv": (corrupt.SOMETHING_V1_DAMAGE, "v1/something-something-v1-train.csv",
                         dict(kind="something_v1", root="v1")),
    "something_v1_labels": (corrupt.CLASS_LIST_DAMAGE, "v1/something-something-v1-labels.csv",
                            dict(kind="something_v1", root="v1")),
    "manifest_classes": (corrupt.CLASS_LIST_DAMAGE, "ss/classes.txt",
                         dict(kind="manifest", manifest="ss/train.csv", classes_file="ss/classes.txt")),
    "something_v2_json": (corrupt.SOMETHING_V2_DAMAGE, "ss/labels/something-something-v2-train.json",
                          dict(kind="something_v2", root="ss")),
    "something_v2_labels": (corrupt.SOMETHING_V2_LABELS_DAMAGE, "ss/labels/something-something-v2-labels.json",
                            dict(kind="something_v2", root="ss")),
    "manifest_csv": (corrupt.MANIFEST_CSV_DAMAGE, "ss/train.csv",
                     dict(kind="manifest", manifest="ss/train.csv", classes_file="ss/classes.txt")),
    "manifest_jsonl": (corrupt.MANIFEST_JSONL_DAMAGE, "ss/train.jsonl",
                       dict(kind="manifest", manifest="ss/train.jsonl", classes_file="ss/classes.txt")),
}
ANNOTATION_CASES = [(fmt, name) for fmt, (table, _, _) in ANNOTATIONS.items() for name in sorted(table)]


@pytest.mark.parametrize("fmt,name", ANNOTATION_CASES, ids=[f"{f}-{n}" for f, n in ANNOTATION_CASES])
def test_damaged_annotation_line(data, fmt, name):
    table, file, args = ANNOTATIONS[fmt]
    edit, where = table[name]
    path = corrupt.apply_text_damage(data / file, edit)
    args = {k: (str(data / v) if k in ("root", "manifest", "classes_file") else v) for k, v in args.items()}
    before = snapshot(data)
    with pytest.raises(DataError) as e:
        build_dataset(args.pop("kind"), split="train", training=True, **args)
    message = str(e.value)
    assert message.startswith(str(path)) and where in message, message
    assert_unchanged(data, before)


# ------------------------------------------------------------------------------------------------
# Something-Else import onto an existing store

FILE_LEVEL = {"invalid_json", "not_an_object"}


@pytest.mark.parametrize("name", sorted(corrupt.SOMETHING_ELSE_DAMAGE))
def test_something_else_import_keeps_the_existing_store(data, name, capsys):
    good = data / "ss/annotations/bounding_box_smthsmth_part1.json"
    out = data / "boxes.db"
    assert main(["proposals", "import-something-else", str(good), "--out", str(out), "--no-progress"]) == 0
    bad = data / "bad.json"
    shutil.copy(good, bad)
    edit, where = corrupt.SOMETHING_ELSE_DAMAGE[name]
    corrupt.apply_text_damage(bad, edit)
    before = snapshot(data)
    capsys.readouterr()
    for extra in ([], ["--append"]):
        assert main(["proposals", "import-something-else", str(bad), "--out", str(out), "--no-progress", *extra]) == 2
        err = capsys.readouterr().err
        assert f"error: {bad}" in err and where in err and "was not changed" in err and "Traceback" not in err
        assert_unchanged(data, before)
    rc = main(["proposals", "import-something-else", str(bad), "--out", str(out), "--no-progress", "--skip-bad"])
    if name in FILE_LEVEL:
        assert rc == 2
        assert_unchanged(data, before)
    else:
        assert rc == 0 and "1 skipped" in capsys.readouterr().out
        with ProposalStore(out) as store:
            assert len(store) == len(json.loads(good.read_text())) - 1


def test_something_else_video_in_two_files(data, capsys):
    part = data / "ss/annotations/bounding_box_smthsmth_part1.json"
    out = data / "boxes.db"
    assert main(["proposals", "import-something-else", str(part), "--out", str(out), "--no-progress"]) == 0
    before = snapshot(data)
    assert main(["proposals", "import-something-else", str(part), str(part), "--out", str(out), "--no-progress"]) == 2
    assert "is also in" in capsys.readouterr().err
    assert_unchanged(data, before)


# ------------------------------------------------------------------------------------------------
# proposals store written by another tool


@pytest.mark.parametrize("name", sorted(corrupt.STORE_DAMAGE))
def test_damaged_store_record(data, name):
    store = data / "ss/proposals.sqlite"
    corrupt.damage_store_record(store, "1", corrupt.STORE_DAMAGE[name])
    before = snapshot(data)
    ds = build_dataset("something_v2", split="train", training=False, root=str(data / "ss"), proposals=str(store),
                       **SMALL)
    index = next(i for i, v in enumerate(ds.videos) if v.video_id == "1")
    with pytest.raises(DataError) as e:
        ds[index]
    assert str(e.value).startswith(f"{store}: video '1'"), str(e.value)
    if name not in ("truncated_blob", "frames_not_sorted"):
        assert "frame " in str(e.value)
    ds.on_error = "skip"
    assert ds[index] is None and ds[(index + 1) % len(ds)] is not None
    assert_unchanged(data, before)


@pytest.mark.parametrize("damage", ["text_file", "other_version", "folder"])
def test_not_a_store(data, damage):
    path = data / "p.db"
    if damage == "text_file":
        path.write_text("id,boxes\n")
    elif damage == "other_version":
        shutil.copy(data / "ss/proposals.sqlite", path)
        import sqlite3

        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE meta SET value = '99' WHERE key = 'format_version'")
        conn.close()
    else:
        path.mkdir()
    before = snapshot(data)
    for mode in ("r", "a") if damage != "folder" else ("r", "a", "w"):  # "w" replaces a file on purpose
        with pytest.raises(DataError, match=f"^{path}"):
            ProposalStore(path, mode=mode)
        assert_unchanged(data, before)
    with pytest.raises(DataError, match=f"^{path}"):
        build_dataset("something_v2", split="train", training=True, root=str(data / "ss"), proposals=str(path))
    assert_unchanged(data, before)


# ------------------------------------------------------------------------------------------------
# proposals extract: damaged videos, a proposer that returns invalid boxes, --out not a store


def test_extract_keeps_the_store_and_lists_the_failures(data):
    from strg.proposals.extract import extract_proposals, find_videos

    videos_dir = data / "ss/20bn-something-something-v2"
    corrupt.cut(videos_dir / "2.webm", 0.25)
    corrupt.png_renamed(videos_dir / "3.webm")
    out = data / "ex.db"
    videos = find_videos([str(videos_dir)])

    def proposer(frames):  # a box per frame; video 4 (24 frames) gets a NaN one
        n = frames.shape[0]
        boxes = torch.tensor([[1.0, 2.0, 10.0, 12.0]]).repeat(n, 1, 1)
        if proposer.nan_next:
            boxes[0, 0, 0] = float("nan")
        return boxes, torch.ones(n, 1), torch.ones(n, dtype=torch.int64)

    proposer.nan_next = False
    first = extract_proposals(videos[:1], out, proposer, num_workers=0, device="cpu", progress=False)
    assert first.written == [videos[0].video_id]
    with ProposalStore(out) as st:
        kept = st.get(videos[0].video_id)

    class NaNFor4:
        def __call__(self, frames):
            return proposer(frames)

    def opener(path):
        from strg.data.decode import open_video

        proposer.nan_next = Path(path).stem == "4"
        return open_video(path, backend="pyav")

    result = extract_proposals(videos, out, NaNFor4(), num_workers=0, device="cpu", progress=False, opener=opener)
    assert set(result.failed) == {"2", "3", "4"}
    assert str(videos_dir / "2.webm") in result.failed["2"] and "frame 0" in result.failed["4"]
    with ProposalStore(out) as st:
        assert "4" not in st and "2" not in st and len(st) == len(videos) - 3
        again = st.get(videos[0].video_id)
    assert all(np.array_equal(kept[k], again[k]) for k in ("frames", "boxes", "scores", "num_boxes"))
    # --out that is not a store: refused before anything is written
    (data / "notes.db").write_text("my notes\n")
    before = snapshot(data)
    with pytest.raises(DataError, match="notes.db: not a proposals store"):
        extract_proposals(videos, data / "notes.db", proposer, num_workers=0, device="cpu", progress=False)
    assert_unchanged(data, before)
    # the command refuses it before it loads the detector
    assert main(["proposals", "extract", "--videos", str(videos_dir), "--out", str(data / "notes.db"),
                 "--random-weights", "--device", "cpu", "--no-progress"]) == 2
    assert_unchanged(data, before)


# ------------------------------------------------------------------------------------------------
# training and evaluation from the command line


def _config(tmp_path: Path, data_root: Path, **data) -> Path:
    cfg = {
        "model": {"name": "i3d_r50", "width": 4, "stage_blocks": [1, 1, 1, 1], "dim": 16},
        "data": {"kind": "something_v2", "root": str(data_root), **{k: list(v) if isinstance(v, tuple) else v
                                                                    for k, v in SMALL.items()}, **data},
        "train": {"iterations": 2, "batch_size": 4, "batch_per_device": 4, "base_batch": 4, "warmup_iters": 0,
                  "num_workers": 0, "device": "cpu", "tensorboard": False, "checkpoint_period": 2},
        "eval": {"split": None, "num_workers": 0},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_training_skips_or_stops_on_damaged_videos(data, tmp_path, capsys, one_thread):
    videos = data / "ss/20bn-something-something-v2"
    train_ids = [e["id"] for e in json.loads((data / "ss/labels/something-something-v2-train.json").read_text())]
    cut = corrupt.cut(videos / f"{train_ids[0]}.webm", 0.25)  # the seek raised av.error.PermissionError
    corrupt.png_renamed(videos / f"{train_ids[1]}.webm")
    before = snapshot(data)
    # on_error=raise: exit code 2, one line naming a damaged file, no traceback
    cfg = _config(tmp_path, data / "ss")
    rc = main(["train", str(cfg), "--run-dir", str(tmp_path / "raise")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and str(videos) in err
    # on_error=skip: the run finishes and counts what it skipped
    cfg = _config(tmp_path, data / "ss", on_error="skip")
    assert main(["train", str(cfg), "--run-dir", str(tmp_path / "skip")]) == 0
    log = (tmp_path / "skip/log.txt").read_text()
    records = [json.loads(line) for line in (tmp_path / "skip/metrics.jsonl").read_text().splitlines()]
    assert "training samples were skipped" in log or any(r.get("skipped") for r in records)
    assert_unchanged(data, before)
    assert cut.exists()
    # evaluation with every validation video damaged: a clear error, no predictions file
    val_ids = [e["id"] for e in json.loads((data / "ss/labels/something-something-v2-validation.json").read_text())]
    for i in val_ids:
        corrupt.png_renamed(videos / f"{i}.webm")
    before = snapshot(tmp_path)
    capsys.readouterr()
    rc = main(["eval", str(cfg), "--checkpoint", str(tmp_path / "skip"), "--split", "val",
               "--predictions", str(tmp_path / "p.txt")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "all 2 items were skipped" in err, err
    assert_unchanged(tmp_path, before)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    run = tmp_path_factory.mktemp("ckpt_run")
    config = Path(__file__).parents[1] / "configs/tiny_cpu.yaml"
    torch.set_num_threads(1)
    assert main(["train", str(config), "train.iterations=1", "eval.split=null", "--run-dir", str(run)]) == 0
    return config, next((run / "checkpoints").glob("ckpt_*.pt"))


@pytest.mark.parametrize("name", sorted(corrupt.CHECKPOINT_DAMAGE))
def test_damaged_checkpoint(checkpoint, tmp_path, name, capsys):
    config, good = checkpoint
    bad = tmp_path / "ckpt.pt"
    shutil.copy(good, bad)
    corrupt.CHECKPOINT_DAMAGE[name](bad)
    before = snapshot(tmp_path)
    predictions = tmp_path / "pred.txt"
    capsys.readouterr()
    rc = main(["eval", str(config), "--checkpoint", str(bad), "--predictions", str(predictions)])
    err = capsys.readouterr().err
    assert rc == 2 and str(bad) in err and "Traceback" not in err, err
    assert_unchanged(tmp_path, before)
    # the same file as a stage's starting point (train.init): refused before training starts
    rc = main(["train", str(config), f"train.init={bad}", "train.stage=joint", "eval.split=null",
               "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and str(bad) in err and "Traceback" not in err, err
    assert not list((tmp_path / "run").glob("checkpoints/*.pt"))
    from strg.engine.checkpoint import load_checkpoint

    if name not in ("missing_model_key", "tensor_of_wrong_shape", "model_not_a_dict"):
        with pytest.raises(CheckpointError, match=str(bad)):
            load_checkpoint(bad)


# ------------------------------------------------------------------------------------------------
# charades-eval


def test_charades_eval_submissions(data, capsys):
    gt = data / "ch/Charades_v1_test.csv"
    ids = [line.split(",")[0] for line in gt.read_text().splitlines()[1:]]
    scores = np.random.default_rng(0).random((len(ids), len(CLASSES)))
    sub = data / "sub.txt"
    cases = {
        "no_matching_id": ("".join(f"X{i} " + " ".join(map(str, s)) + "\n" for i, s in zip(ids, scores)), "none of"),
        "not_a_number": (f"{ids[0]} a b\n", ":1"),
        "rows_of_two_lengths": (f"{ids[0]} 1 2\n{ids[1]} 1\n", ":2"),
        "duplicate_id": (f"{ids[0]} 1\n{ids[0]} 1\n", ":2"),
        "empty": ("", "empty"),
    }
    for name, (text, where) in cases.items():
        sub.write_text(text)
        before = snapshot(data)
        assert main(["charades-eval", str(sub), str(gt)]) == 2, name
        err = capsys.readouterr().err
        assert f"error: {sub}" in err and where in err and "Traceback" not in err, (name, err)
        assert_unchanged(data, before)
    # a partial submission is scored as the official script does: missing videos rank last
    sub.write_text("".join(f"{i} " + " ".join(map(str, s)) + "\n" for i, s in zip(ids[1:], scores[1:])))
    assert main(["charades-eval", str(sub), str(gt)]) == 0
    out = capsys.readouterr().out
    assert f"1 of {len(ids)} ground-truth videos are missing" in out and "(1 missing" in out
    # a damaged ground-truth line
    corrupt.apply_text_damage(gt, corrupt.CHARADES_CSV_DAMAGE["missing_actions_and_length"][0])
    assert main(["charades-eval", str(sub), str(gt)]) == 2
    assert f"error: {gt}:3" in capsys.readouterr().err
