"""Multi-clip evaluation: max / mean over a video's clips, metrics, the predictions file, `strg eval`."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from strg.cli import main
from strg.data.collate import make_collate
from strg.engine import evaluate, train
from strg.data.datasets import VideoRecord
from strg.engine.distributed import DistInfo
from strg.engine.evaluator import evaluate_model
from strg.metrics import read_submission

# clip scores of 3 videos x 2 clips, 3 classes; the fake model returns them as logits
CLIP_SCORES = np.array([
    [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]],  # video 0
    [[0.0, 0.0, 3.0], [0.0, 0.0, -1.0]],  # video 1
    [[0.5, 0.5, 0.0], [0.5, 0.7, 0.0]],  # video 2
])


class ScoreClips(torch.utils.data.Dataset):
    """Item (video v, clip c): a 3 x 1 x 1 x 1 "clip" holding the scores of CLIP_SCORES[v, c]."""

    def __init__(self, multi_label):
        self.videos = [VideoRecord(f"vid{v}", path="") for v in range(3)]
        self.classes = ["a", "b", "c"]
        self.multi_label = multi_label

    def __len__(self):
        return 6

    def __getitem__(self, i):
        v, c = divmod(i, 2)
        target = (torch.tensor([[1, 1, 0], [0, 0, 1], [0, 1, 0]][v], dtype=torch.float32) if self.multi_label
                  else torch.tensor([1, 2, 0][v]))
        return {"clip": torch.tensor(CLIP_SCORES[v, c], dtype=torch.float32).view(3, 1, 1, 1),
                "boxes": torch.zeros(1, 0, 4), "box_mask": torch.zeros(1, 0, dtype=torch.bool),
                "target": target, "video_id": f"vid{v}", "video_index": v, "clip_index": c}


class Identity(nn.Module):
    uses_boxes = False

    def forward(self, clips):
        return clips.flatten(1)  # (B, 3)


def run(tmp_path, multi_label, combine, scores="logit"):
    path = tmp_path / f"pred_{combine}.txt"
    metrics = evaluate_model(Identity(), ScoreClips(multi_label), collate_fn=make_collate(0), info=DistInfo(),
                             multi_label=multi_label, batch_size=4, combine=combine, scores=scores,
                             progress=False, predictions_path=path)
    ids, s = read_submission(path)
    return metrics, ids, s


def test_max_and_mean_over_clips(tmp_path):
    metrics, ids, s = run(tmp_path, False, "max")
    assert ids == ["vid0", "vid1", "vid2"]
    np.testing.assert_allclose(s, CLIP_SCORES.max(axis=1), atol=1e-6)
    # argmax per video: 1 (target 1), 2 (target 2), 1 (target 0) -> top1 2/3
    assert metrics["top1"] == pytest.approx(2 / 3) and metrics["top5"] == 1.0
    assert metrics["num_videos"] == 3 and metrics["num_clips"] == 6
    metrics, _, s = run(tmp_path, False, "mean")
    np.testing.assert_allclose(s, CLIP_SCORES.mean(axis=1), atol=1e-6)


class Unlabelled(ScoreClips):
    def __getitem__(self, i):
        return dict(super().__getitem__(i), target=torch.tensor(-1))  # e.g. Something-Something "test"


def test_unlabelled_split_gives_predictions_only(tmp_path):
    metrics = evaluate_model(Identity(), Unlabelled(False), collate_fn=make_collate(0), info=DistInfo(),
                             multi_label=False, combine="max", scores="logit", progress=False,
                             predictions_path=tmp_path / "p.txt")
    assert "top1" not in metrics and metrics["num_videos"] == 3
    assert len((tmp_path / "p.txt").read_text().splitlines()) == 3


def test_multilabel_map_and_probabilities(tmp_path):
    metrics, _, s = run(tmp_path, True, "max", scores="prob")
    np.testing.assert_allclose(s, 1 / (1 + np.exp(-CLIP_SCORES.max(axis=1))), atol=1e-5)  # sigmoid is monotonic
    # class a: positives {0}: vid0 (.73) ranks first -> 1; class b: positives {0, 2}: vid0 .88 > vid2 .67 > vid1 .5 -> 1
    # class c: positive {1}: vid1 .95 first -> 1
    assert metrics["mAP"] == pytest.approx(1.0) and metrics["wAP"] == pytest.approx(1.0)


def test_evaluate_api_and_cli(tmp_path, capsys):
    torch.set_num_threads(1)
    cfg = {
        "model": {"name": "st_gcn_r50", "width": 4, "stage_blocks": [1, 1, 1, 1], "dim": 8, "gcn_layers": 1},
        "data": {"kind": "random", "num_videos": 6, "num_classes": 3, "frames": 2, "size": 32, "multi_label": True,
                 "test_clips": 3},
        "train": {"iterations": 2, "batch_size": 2, "batch_per_device": 2, "base_batch": 2, "num_workers": 0,
                  "device": "cpu", "tensorboard": False, "progress": False},
        "eval": {"split": "val", "batch_per_device": 3, "num_workers": 0},
    }
    out = train(cfg, run_dir=tmp_path / "run")
    again = evaluate(tmp_path / "run" / "config.yaml", checkpoint=tmp_path / "run", predictions=tmp_path / "p.txt")
    assert again["mAP"] == pytest.approx(out["mAP"]) and again["num_clips"] == 18
    assert (tmp_path / "p.txt").read_text() == (tmp_path / "run" / "predictions_val.txt").read_text()
    mean = evaluate(tmp_path / "run" / "config.yaml", checkpoint=tmp_path / "run", overrides=["eval.combine=mean"])
    assert mean["num_videos"] == 6
    assert main(["eval", str(tmp_path / "run" / "config.yaml"), "eval.max_videos=2",
                 "--checkpoint", str(tmp_path / "run")]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["num_videos"] == 2 and printed["num_clips"] == 6
    # a checkpoint of another model is refused with the keys named
    assert main(["eval", str(tmp_path / "run" / "config.yaml"), "model.name=sim_gcn_r50",
                 "--checkpoint", str(tmp_path / "run")]) == 2
    assert "graph_head" in capsys.readouterr().err


class ScoreClipsWithFailure(ScoreClips):
    """Video 1 cannot be read (on_error="skip"): its clips are None; its target comes from the records."""

    clips_per_video = 2

    def __getitem__(self, i):
        return None if i // 2 == 1 else super().__getitem__(i)

    def video_target(self, v):
        return super().__getitem__(2 * v)["target"]


@pytest.mark.parametrize("multi_label", [True, False])
def test_failed_video_scored_like_the_official_script(tmp_path, multi_label):
    from strg.metrics import charades_map, topk_accuracy

    with pytest.warns(UserWarning, match="1 videos could not be read"):
        metrics = evaluate_model(Identity(), ScoreClipsWithFailure(multi_label), collate_fn=make_collate(0),
                                 info=DistInfo(), multi_label=multi_label, batch_size=4, combine="max", scores="logit",
                                 progress=False, predictions_path=tmp_path / "p.txt")
    scores = CLIP_SCORES.max(axis=1)
    scores[1] = -np.inf  # a video missing from a submission: -inf (Charades_v1_classify.m)
    full = ScoreClips(multi_label)
    targets = np.stack([full[2 * v]["target"].numpy() for v in range(3)])
    if multi_label:
        assert metrics["mAP"] == pytest.approx(charades_map(scores, targets)["mAP"])
    else:
        present = topk_accuracy(scores[[0, 2]], targets[[0, 2]], ks=(1, 5))
        assert metrics["top1"] == pytest.approx(present["top1"] * 2 / 3)  # the failed video is wrong
    assert metrics["num_videos"] == 3 and metrics["num_skipped"] == 2
    ids, _ = read_submission(tmp_path / "p.txt")
    assert list(ids) == ["vid0", "vid2"]
