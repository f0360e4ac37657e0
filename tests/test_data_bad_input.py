"""One test per kind of bad input: each names the file (and line or id); `on_error="skip"`
logs the sample, returns None, and collate counts it."""

import json
import logging
import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from strg.data import build_dataset
from strg.data.collate import make_collate
from strg.data.proposals import ProposalStore
from strg.data.testing import index_frames, write_video
from strg.errors import DataError

SMALL = dict(train_short_side=(32, 40), crop_size=32, test_short_side=32, num_frames=4)


def _manifest(tmp_path, rows, header="path,labels", name="m.csv", training=True, **options):
    (tmp_path / "classes.txt").write_text("run\njump\n")
    (tmp_path / name).write_text("".join(line + "\n" for line in ([header] if header else []) + rows))
    return build_dataset("manifest", split="train", training=training, manifest=str(tmp_path / name),
                         classes_file=str(tmp_path / "classes.txt"), **{**SMALL, **options})


def _good(tmp_path, name="ok.mp4", n=24):
    return write_video(tmp_path / name, index_frames(n), fps=24)


def test_missing_video_raise_and_skip(tmp_path, caplog):
    _good(tmp_path)
    _good(tmp_path, "ok2.mp4")
    ds = _manifest(tmp_path, ["ok.mp4,run", "gone.mp4,jump", "ok2.mp4,jump"])
    with pytest.raises(DataError, match="gone.mp4.*not found"):
        ds[1]
    # evaluation: the bad video gives None, collate drops and counts it
    ds = _manifest(tmp_path, ["ok.mp4,run", "gone.mp4,jump", "ok2.mp4,jump"], on_error="skip", training=False,
                   test_clips=1)
    with caplog.at_level(logging.WARNING, logger="strg.data"):
        assert ds[1] is None
    assert "gone.mp4" in caplog.text and "skipping video gone" in caplog.text
    batches = list(DataLoader(ds, batch_size=3, collate_fn=make_collate(4)))
    assert batches[0]["num_skipped"] == 1 and batches[0]["clips"].shape[0] == 2
    # training: the item is replaced by another video (never an empty micro-batch under DDP)
    ds = _manifest(tmp_path, ["ok.mp4,run", "gone.mp4,jump", "ok2.mp4,jump"], on_error="skip")
    torch.manual_seed(0)
    item = ds[1]
    assert item is not None and item["video_id"] in ("ok", "ok2") and item["num_skipped"] >= 1
    batch = make_collate(4)([item, ds[0]])
    assert batch["clips"].shape[0] == 2 and batch["num_skipped"] == item["num_skipped"]
    # a dataset where nothing can be read stops with a clear error instead of looping
    broken = _manifest(tmp_path, ["gone.mp4,run", "gone2.mp4,jump"], on_error="skip")
    with pytest.raises(DataError, match="in a row could not be read"):
        broken[0]


def test_unreadable_video(tmp_path):
    (tmp_path / "junk.mp4").write_bytes(os.urandom(3000))
    with pytest.raises(DataError, match="junk.mp4"):
        _manifest(tmp_path, ["junk.mp4,run"])[0]


def test_truncated_video(tmp_path):
    data = open(_good(tmp_path, "full.webm", n=48), "rb").read()
    (tmp_path / "cut.webm").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.webm.*truncated"):
        _manifest(tmp_path, ["cut.webm,run"])[0]


def test_zero_frame_video(tmp_path):
    (tmp_path / "empty").mkdir()  # a frame folder without frames
    with pytest.raises(DataError, match="empty.*zero frames"):
        _manifest(tmp_path, ["empty,run"])[0]


@pytest.mark.parametrize(
    "actions,msg",
    [("c000 1.0", r"Charades_v1_train.csv:3: video B: action 'c000 1.0' is not 'class start end'"),
     ("c000 x 2", r"Charades_v1_train.csv:3: video B: .*non-numeric"),
     ("c000 2 1", r"Charades_v1_train.csv:3: video B: .*ends before it starts")],
)
def test_charades_line_that_does_not_parse(tmp_path, actions, msg):
    (tmp_path / "Charades_v1_classes.txt").write_text("c000 Holding\n")
    header = "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length\n"
    rows = ["A,s,k,,,Yes,x,y,z,,1", f"B,s,k,,,Yes,x,y,z,{actions},1"]
    (tmp_path / "Charades_v1_train.csv").write_text(header + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=msg):
        build_dataset("charades", split="train", training=True, root=str(tmp_path))


def test_csv_lines_that_do_not_parse(tmp_path):
    (tmp_path / "something-something-v1-labels.csv").write_text("Holding something\n")
    (tmp_path / "something-something-v1-train.csv").write_text("1;Holding something\n2;Holding;something\n")
    with pytest.raises(DataError, match=r"something-something-v1-train.csv:2: expected 'id;label'"):
        build_dataset("something_v1", split="train", training=True, root=str(tmp_path))
    with pytest.raises(DataError, match=r"m.csv:3: more fields"):
        _manifest(tmp_path, ["a.mp4,run", "b.mp4,run,extra"])
    with pytest.raises(DataError, match=r"m.csv:2: start 'soon' is not a number"):
        _manifest(tmp_path, ["a.mp4,run,soon,"], header="path,labels,start,end")


def test_json_that_does_not_parse(tmp_path):
    lab = tmp_path / "something-something-v2-labels.json"
    lab.write_text(json.dumps({"Holding something": "0"}))
    train = tmp_path / "something-something-v2-train.json"
    train.write_text('[{"id": "1", "template": "Holding [something]"},\n {"id": "2", "template": }]')
    with pytest.raises(DataError, match=r"something-something-v2-train.json:2: invalid JSON"):
        build_dataset("something_v2", split="train", training=True, root=str(tmp_path))
    train.write_text('[{"id": "1", "template": "Holding [something]"}, {"template": "Holding [something]"}]')
    with pytest.raises(DataError, match=r"something-something-v2-train.json: entry 1 has no 'id'"):
        build_dataset("something_v2", split="train", training=True, root=str(tmp_path))
    with pytest.raises(DataError, match=r"m.jsonl:2: invalid JSON"):
        _manifest(tmp_path, ['{"path": "a.mp4", "labels": "run"}', '{"path": "b.mp4", '], header="", name="m.jsonl")


def test_unknown_class(tmp_path):
    (tmp_path / "Charades_v1_classes.txt").write_text("c000 Holding\n")
    header = "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length\n"
    (tmp_path / "Charades_v1_train.csv").write_text(header + "A,s,k,,,Yes,x,y,z,c999 0 1,1\n")
    with pytest.raises(DataError, match=r"Charades_v1_train.csv:2: video A: unknown class 'c999'"):
        build_dataset("charades", split="train", training=True, root=str(tmp_path))
    (tmp_path / "something-something-v2-labels.json").write_text(json.dumps({"Holding something": "0"}))
    (tmp_path / "something-something-v2-train.json").write_text(json.dumps([{"id": "8", "template": "Eating [x]"}]))
    with pytest.raises(DataError, match=r"train.json: id 8: unknown class 'Eating x'"):
        build_dataset("something_v2", split="train", training=True, root=str(tmp_path))
    with pytest.raises(DataError, match=r"m.csv:3: unknown class 'fly'"):
        _manifest(tmp_path, ["a.mp4,run", "b.mp4,fly"])


def test_video_without_proposals_entry(tmp_path):
    _good(tmp_path)
    with ProposalStore(tmp_path / "p.db", mode="w") as st:
        st.put("other", frames=[0], boxes=np.zeros((1, 1, 4)), scores=np.ones((1, 1)), num_boxes=[0],
               frame_size=(48, 64))
    ds = _manifest(tmp_path, ["ok.mp4,run"], proposals=str(tmp_path / "p.db"))
    with pytest.raises(DataError, match=r"p.db: no proposals for video 'ok'"):
        ds[0]


def test_proposals_for_another_frame_shape(tmp_path):
    _good(tmp_path)
    with ProposalStore(tmp_path / "p.db", mode="w") as st:
        st.put("ok", frames=[0], boxes=np.zeros((1, 1, 4)), scores=np.ones((1, 1)), num_boxes=[0],
               frame_size=(100, 100))
    ds = _manifest(tmp_path, ["ok.mp4,run"], proposals=str(tmp_path / "p.db"))
    with pytest.raises(DataError, match=r"'ok' are for 100x100 frames.*ok.mp4 is 64x48"):
        ds[0]


def test_invalid_box_in_store(tmp_path):
    with ProposalStore(tmp_path / "p.db", mode="w") as st:
        with pytest.raises(DataError, match=r"p.db: video 'v'.*x2 < x1"):
            st.put("v", frames=[0], boxes=[[[30, 0, 10, 5]]], scores=[[1.0]], num_boxes=[1], frame_size=(48, 64))
        with pytest.raises(DataError, match=r"p.db: video 'v'.*outside the 64x48 frame"):
            st.put("v", frames=[0], boxes=[[[30, 0, 70, 5]]], scores=[[1.0]], num_boxes=[1], frame_size=(48, 64))


def test_manifest_duplicate_ids(tmp_path):
    _good(tmp_path)
    with pytest.raises(DataError, match="appears twice"):
        _manifest(tmp_path, ["ok.mp4,run", "ok.mp4,jump"])
