"""Datasets in the real formats, written small by the tests: labels, class indices, sampled frames,
the Charades label union over a clip's time span, test-mode enumeration, DataLoader + collate."""

import inspect
import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from strg.data import DATASET_KINDS, build_dataset, dataset_builder
from strg.data.collate import make_collate
from strg.data.testing import index_frames, write_frame_folder, write_video
from strg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from strg.errors import ConfigError

STEP = 4  # frame i is grey level 4 * i
SMALL = dict(train_short_side=(32, 40), crop_size=32, test_short_side=32)
CHARADES_HEADER = "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length\n"


def frame_ids(clip):
    """Frame index of each clip frame, read back from its grey level."""
    grey = clip * torch.tensor(IMAGENET_STD).view(3, 1, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    return np.round(grey.mean(dim=(0, 2, 3)).numpy() * 255 / STEP).astype(int)


def make_charades(root, source="video"):
    (root / "Charades_v1_classes.txt").write_text("c000 Holding a cup\nc001 Opening a door\nc002 Drinking\n")
    rows = [
        'ZZZ9,s1,Kitchen,,,Yes,"a, b",cup;door,"long, quoted",c000 0.00 0.50;c001 0.40 1.20;c002 1.60 2.00,2.0',
        "AAA1,s2,Hall,6,7,Yes,x,y,z,,2.0",  # empty actions
        "MMM5,s3,Hall,6,7,Yes,x,y,z,c002 0.0 0.3,2.0",
    ]
    (root / "Charades_v1_train.csv").write_text(CHARADES_HEADER + "\n".join(rows) + "\n")
    (root / "Charades_v1_test.csv").write_text(CHARADES_HEADER + rows[2] + "\n" + rows[0] + "\n")
    for vid in ("ZZZ9", "AAA1", "MMM5"):
        frames = index_frames(48, step=STEP)  # 2 s at 24 fps
        if source == "video":
            write_video(root / "Charades_v1" / f"{vid}.mp4", frames, fps=24)
        else:
            write_frame_folder(root / "Charades_v1_rgb" / vid, frames, pattern=vid + "-{:06d}.jpg", first=1)


@pytest.mark.parametrize("source", ["video", "frames"])
def test_charades_labels_order_and_clip_union(tmp_path, source):
    (tmp_path / "Charades_v1").mkdir()
    make_charades(tmp_path, source)
    ds = build_dataset("charades", split="train", training=True, root=str(tmp_path), source=source, num_frames=4,
                       **SMALL)
    assert ds.multi_label and ds.classes == ["Holding a cup", "Opening a door", "Drinking"]
    assert [v.video_id for v in ds.videos] == ["ZZZ9", "AAA1", "MMM5"] and len(ds) == 3
    assert ds.videos[0].labels == (0, 1, 2) and ds.videos[1].labels == ()
    acts = ds.videos[0].actions
    torch.manual_seed(0)
    seen = set()
    for _ in range(12):
        item = ds[0]
        ids = frame_ids(item["clip"])
        assert (np.diff(ids) == 4).all()  # stride 1/6 s = 4 frames at 24 fps
        t0, t1 = ids[0] / 24, (ids[-1] + 1) / 24
        expected = torch.zeros(3)
        expected[[int(c) for c, s, e in acts if s < t1 and e > t0]] = 1
        assert torch.equal(item["target"], expected), (ids, item["target"])
        seen.add(tuple(item["target"].tolist()))
        assert item["video_id"] == "ZZZ9" and item["video_index"] == 0 and item["clip_index"] == 0
    assert len(seen) > 1  # the union really depends on where the clip falls
    assert ds[1]["target"].sum() == 0

    ev = build_dataset("charades", split="val", training=False, root=str(tmp_path), source=source, num_frames=4,
                       test_clips=3, test_views=2, **SMALL)
    assert [v.video_id for v in ev.videos] == ["MMM5", "ZZZ9"] and len(ev) == 2 * 3 * 2
    item = ev[6 + 5]  # ZZZ9, clip 2, view 1
    assert (item["video_id"], item["video_index"], item["clip_index"]) == ("ZZZ9", 1, 5)
    assert item["target"].tolist() == [1.0, 1.0, 1.0]  # union over the whole video
    starts = [frame_ids(ev[6 + 2 * c]["clip"])[0] for c in range(3)]
    span = 3 * 4 + 1
    assert starts == [round((48 - span) * (c + 0.5) / 3) for c in range(3)]
    assert ev[6]["clip"].shape == (3, 4, 32, 32)  # 2 views: square crops of the 32-px short side


def test_something_v2_templates_and_test_split(tmp_path):
    (tmp_path / "labels").mkdir()
    labels = {"Holding something": "1", "Pushing something from left to right": "0"}
    (tmp_path / "labels" / "something-something-v2-labels.json").write_text(json.dumps(labels))
    train = [{"id": "11", "label": "holding a pen", "template": "Holding [something]", "placeholders": ["a pen"]},
             {"id": "7", "label": "pushing a cup", "template": "Pushing [something] from left to right",
              "placeholders": ["a cup"]}]
    (tmp_path / "labels" / "something-something-v2-train.json").write_text(json.dumps(train))
    (tmp_path / "labels" / "something-something-v2-test.json").write_text(json.dumps([{"id": "5"}]))
    for vid in ("11", "7", "5"):
        write_video(tmp_path / "20bn-something-something-v2" / f"{vid}.webm", index_frames(30, step=STEP), fps=12)
    ds = build_dataset("something_v2", split="train", training=True, root=str(tmp_path), num_frames=4, **SMALL)
    assert ds.classes == ["Pushing something from left to right", "Holding something"] and not ds.multi_label
    assert [v.video_id for v in ds.videos] == ["11", "7"]
    item = ds[0]
    assert item["target"].dtype == torch.int64 and item["target"].item() == 1 and ds[1]["target"].item() == 0
    assert (np.diff(frame_ids(item["clip"])) == 2).all()  # stride 2 frames: 6 fps from 12 fps
    test = build_dataset("something_v2", split="test", training=False, root=str(tmp_path), num_frames=4, **SMALL)
    assert len(test) == 2 and test[1]["target"].item() == -1 and test[1]["clip_index"] == 1
    with pytest.raises(ConfigError, match="flip_label_map"):
        build_dataset("something_v2", split="train", training=True, root=str(tmp_path), flip=True, **SMALL)


def test_something_v1_frames(tmp_path):
    (tmp_path / "something-something-v1-labels.csv").write_text("Holding something\nTearing something\n")
    (tmp_path / "something-something-v1-validation.csv").write_text("42;Tearing something\n9;Holding something\n")
    for vid in ("42", "9"):
        write_frame_folder(tmp_path / "20bn-something-something-v1" / vid, index_frames(10, step=STEP))
    ds = build_dataset("something_v1", split="val", training=False, root=str(tmp_path), num_frames=8, test_clips=1,
                       **SMALL)
    assert [v.video_id for v in ds.videos] == ["42", "9"] and [ds[i]["target"].item() for i in range(2)] == [1, 0]
    # a 10-frame video and a 15-frame span: frames 0 2 4 6 8 then the last frame repeated
    assert frame_ids(ds[0]["clip"]).tolist() == [0, 2, 4, 6, 8, 9, 9, 9]


def test_manifest_csv_and_jsonl_with_segments(tmp_path):
    (tmp_path / "classes.txt").write_text("run\njump\nsit\n")
    write_video(tmp_path / "videos" / "a.mp4", index_frames(60, step=STEP), fps=30)
    write_frame_folder(tmp_path / "frames" / "b", index_frames(20, step=STEP))
    (tmp_path / "train.csv").write_text("path,labels,start,end\nvideos/a.mp4,run;sit,1.0,1.5\nframes/b,jump,,\n")
    rows = [{"path": "videos/a.mp4", "labels": ["run", "sit"], "id": "clipA", "start": 1.0, "end": 1.5},
            {"path": "frames/b", "labels": "jump"}]
    (tmp_path / "val.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    common = dict(classes_file=str(tmp_path / "classes.txt"), multi_label=True, num_frames=4, stride=0.1,
                  stride_unit="seconds", frames_fps=10, **SMALL)
    tr = build_dataset("manifest", split="train", training=True, manifest=str(tmp_path / "{split}.csv"), **common)
    va = build_dataset("manifest", split="val", training=False, manifest=str(tmp_path / "val.jsonl"), test_clips=1,
                       **common)
    assert [v.video_id for v in tr.videos] == ["a", "b"] and [v.video_id for v in va.videos] == ["clipA", "b"]
    for ds in (tr, va):
        assert ds[0]["target"].tolist() == [1.0, 0.0, 1.0] and ds[1]["target"].tolist() == [0.0, 1.0, 0.0]
        ids = frame_ids(ds[0]["clip"])
        assert (np.diff(ids) == 3).all() and ids[0] >= 30 and ids[-1] < 45  # 0.1 s at 30 fps, inside [1, 1.5) s
        assert (np.diff(frame_ids(ds[1]["clip"])) == 1).all()  # 0.1 s at the folder's 10 fps
    with pytest.raises(Exception, match="several labels"):
        build_dataset("manifest", split="train", training=True, manifest=str(tmp_path / "train.csv"),
                      classes_file=str(tmp_path / "classes.txt"), multi_label=False)


def test_builders_signature_and_dataloader(tmp_path):
    for kind in DATASET_KINDS:
        params = inspect.signature(dataset_builder(kind)).parameters.values()
        assert all(p.kind is p.KEYWORD_ONLY and p.annotation is not p.empty for p in params)
        assert all(p.default is not p.empty for p in params if p.name not in ("split", "training"))
    with pytest.raises(ConfigError, match="unknown dataset kind 'kinetics'"):
        build_dataset("kinetics", split="train", training=True)
    with pytest.raises(TypeError, match="bogus"):
        build_dataset("charades", split="train", training=True, bogus=1)
    (tmp_path / "Charades_v1").mkdir()
    make_charades(tmp_path)
    ds = build_dataset("charades", split="train", training=True, root=str(tmp_path), num_frames=4, **SMALL)
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=make_collate(5))
    batches = list(loader)
    assert [b["clips"].shape[0] for b in batches] == [2, 1]
    assert batches[0]["boxes"].shape == (2, 4, 5, 4) and batches[0]["targets"].shape == (2, 3)
    assert sum(b["num_skipped"] for b in batches) == 0
    assert [v for b in batches for v in b["video_ids"]] == ["ZZZ9", "AAA1", "MMM5"]


def test_store_matched_by_time_and_scaled_to_the_video(tmp_path):
    """Proposals indexed at 24 fps on 96x128 frames, video decoded at 12 fps and 48x64."""
    from strg.data.proposals import ProposalStore

    write_video(tmp_path / "v.mp4", index_frames(24, step=STEP), fps=12)
    (tmp_path / "classes.txt").write_text("a\n")
    (tmp_path / "m.csv").write_text("path,labels\nv.mp4,a\n")
    stored = np.arange(0, 48, 2)  # every 2nd frame at 24 fps; box x1 = 2 * (frame index)
    boxes = np.zeros((len(stored), 1, 4), dtype=np.float32)
    boxes[:, 0] = np.stack([2.0 * stored, np.full(len(stored), 10.0), 2.0 * stored + 4, np.full(len(stored), 30.0)], 1)
    with ProposalStore(tmp_path / "p.db", mode="w") as st:
        st.put("v", frames=stored, boxes=boxes, scores=np.ones((len(stored), 1)), num_boxes=np.ones(len(stored)),
               frame_size=(96, 128), fps=24.0)
    ds = build_dataset("manifest", split="val", training=False, manifest=str(tmp_path / "m.csv"),
                       classes_file=str(tmp_path / "classes.txt"), num_frames=4, stride=3, stride_unit="frames",
                       test_clips=1, test_short_side=48, proposals=str(tmp_path / "p.db"), max_boxes=2)
    item = ds[0]
    ids = frame_ids(item["clip"])  # frames of the 12 fps video
    assert item["box_mask"][:, 0].all() and not item["box_mask"][:, 1].any()
    # frame i at 12 fps is frame 2i at 24 fps; the store's 96 -> 48 px halves the box
    np.testing.assert_allclose(item["boxes"][:, 0, 0].numpy(), 2 * ids, atol=1e-4)
    np.testing.assert_allclose(item["boxes"][:, 0, 1].numpy(), 5.0, atol=1e-4)
