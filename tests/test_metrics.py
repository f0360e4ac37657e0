"""The official Charades mAP on hand-computed cases, top-k accuracy, the submission format."""

import warnings

import numpy as np
import pytest

from strg.cli import main
from strg.errors import DataError
from strg.metrics import charades_eval, charades_map, read_submission, topk_accuracy, write_submission


def test_ties_keep_row_order():
    # Same scores, positives in a different row order: the stable sort (no tie grouping) of the
    # official script gives different APs. Class 1 is positive everywhere so that no video is empty.
    scores = np.array([[0.9, 0.0], [0.5, 0.0], [0.5, 0.0], [0.1, 0.0]])
    # ranked rows 0,1,2,3; hits at ranks 2 and 4: AP = (1/2 + 2/4) / 2
    r = charades_map(scores, [[0, 1], [1, 1], [0, 1], [1, 1]])
    np.testing.assert_allclose(r["ap"], [0.5, 1.0])
    # hits at ranks 3 and 4: AP = (1/3 + 2/4) / 2
    r = charades_map(scores, [[0, 1], [0, 1], [1, 1], [1, 1]])
    np.testing.assert_allclose(r["ap"], [5 / 12, 1.0])


def test_empty_video_scored_minus_inf_and_wap():
    # video 4 has no label: its high scores must not count as false positives at the top.
    scores = np.array([[0.9, 0.3], [0.5, 0.3], [0.5, 0.2], [0.1, 0.1], [1.0, 1.0]])
    labels = np.array([[0, 1], [1, 0], [0, 1], [1, 1], [0, 0]])
    r = charades_map(scores, labels)
    # class 0: ranking 0,1,2,3 then video 4 at -inf -> hits at 2 and 4 -> (1/2 + 2/4) / 2
    # class 1: tie 0.3 between videos 0 and 1 keeps video 0 first -> hits at 1, 3, 4
    ap1 = (1 + 2 / 3 + 3 / 4) / 3
    np.testing.assert_allclose(r["ap"], [0.5, ap1])
    assert r["mAP"] == pytest.approx((0.5 + ap1) / 2)
    assert r["wAP"] == pytest.approx((0.5 * 2 + ap1 * 3) / 5)
    assert r["num_positives"].tolist() == [2, 3]


def test_class_without_positives_reported_and_left_out():
    scores = np.array([[0.9, 0.1, 0.5], [0.1, 0.9, 0.5]])
    labels = np.array([[1, 0, 0], [0, 1, 0]])
    with pytest.warns(UserWarning, match="no positive"):
        r = charades_map(scores, labels)
    assert r["missing_classes"] == [2]
    assert np.isnan(r["ap"][2])
    assert r["mAP"] == pytest.approx(1.0)


def test_against_naive_loop():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(30, 6)).astype(float)  # many ties
    labels = (rng.random((30, 6)) < 0.3).astype(int)
    labels[0] = 0  # an empty video
    labels[1:4, :] = 1  # every class has a positive
    r = charades_map(scores, labels)
    s = scores.copy()
    s[labels.sum(1) == 0] = -np.inf
    for c in range(6):
        idx = sorted(range(30), key=lambda i: -s[i, c])  # Python's sort is stable
        tp = fp = 0
        total = 0.0
        for i in idx:
            if labels[i, c]:
                tp += 1
                total += tp / (tp + fp)
            else:
                fp += 1
        assert r["ap"][c] == pytest.approx(total / labels[:, c].sum())


def test_nan_scores_rejected():
    with pytest.raises(ValueError, match="NaN"):
        charades_map([[np.nan]], [[1]])


def test_topk_accuracy():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.4, 0.4, 0.2]])
    targets = np.array([1, 1, 0, 1])
    acc = topk_accuracy(scores, targets, ks=(1, 2))
    # row 0 top1; row 1 rank 2; row 2 rank 3; row 3 tie with class 0 counts as top1
    assert acc["top1"] == pytest.approx(2 / 4)
    assert acc["top2"] == pytest.approx(3 / 4)
    with pytest.raises(ValueError):
        topk_accuracy(scores, [0, 1, 2, 3])


GT_CSV = """id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length
AAA,s1,Kitchen,6,7,Yes,x,cup,d,c000 0.00 3.00;c001 1.0 2.0,30.0
BBB,s2,Kitchen,,,Yes,x,cup,d,c001 0.00 3.00,30.0
CCC,s3,Kitchen,6,7,Yes,x,cup,d,,30.0
DDD,s4,Kitchen,6,7,Yes,x,cup,d,c000 4.00 9.00,30.0
"""


def test_submission_round_trip_and_charades_eval(tmp_path):
    gt = tmp_path / "gt.csv"
    gt.write_text(GT_CSV)
    sub = tmp_path / "sub.txt"
    # DDD is missing: scored -inf, ranked last for class 0
    write_submission(sub, ["BBB", "AAA", "CCC", "ZZZ"], np.array([[0.9, 0.8], [0.5, 0.1], [1.0, 1.0], [0.0, 0.0]]))
    ids, s = read_submission(sub)
    assert ids == ["BBB", "AAA", "CCC", "ZZZ"] and s.shape == (4, 2)
    with pytest.warns(UserWarning) as record:
        r = charades_eval(sub, gt)
    messages = " ".join(str(w.message) for w in record)
    assert "missing" in messages and "DDD" in messages and "ignored" in messages
    # class 0 (positives AAA, DDD): rows AAA .5, BBB .9, CCC -inf (empty), DDD -inf (missing)
    #   ranking BBB, AAA, CCC, DDD -> hits at 2 and 4 -> (1/2 + 2/4) / 2 = 0.5
    # class 1 (positives AAA, BBB): BBB .8, AAA .1 -> hits at 1, 2 -> 1.0
    np.testing.assert_allclose(r["ap"], [0.5, 1.0])
    assert r["num_missing"] == 1 and r["num_videos"] == 4


def test_bad_submission_names_line(tmp_path):
    sub = tmp_path / "sub.txt"
    sub.write_text("AAA 0.1 0.2\nBBB 0.1 oops\n")
    with pytest.raises(DataError, match=r"sub.txt:2.*BBB"):
        read_submission(sub)
    sub.write_text("AAA 0.1 0.2\nBBB 0.1\n")
    with pytest.raises(DataError, match=r"sub.txt:2"):
        read_submission(sub)
    sub.write_text("AAA 0.1 0.2\nAAA 0.1 0.3\n")
    with pytest.raises(DataError, match="already appears on line 1"):
        read_submission(sub)


def test_charades_eval_cli(tmp_path, capsys):
    gt = tmp_path / "gt.csv"
    gt.write_text(GT_CSV)
    sub = tmp_path / "sub.txt"
    write_submission(sub, ["AAA", "BBB", "CCC", "DDD"], np.array([[0.9, 0.8], [0.5, 0.9], [0.0, 0.0], [0.7, 0.1]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["charades-eval", str(sub), str(gt)]) == 0
    out = capsys.readouterr().out
    assert "mAP: 100.00" in out
    assert main(["charades-eval", str(tmp_path / "nope.txt"), str(gt)]) == 2
