"""``strg charades-eval SUBMISSION GT_CSV``: score a Charades submission file like the official script."""

from __future__ import annotations

import json
import warnings


def add_arguments(parser) -> None:
    parser.add_argument("submission", help="submission file: one line 'id score_1 ... score_C' per video")
    parser.add_argument("gt_csv", help="Charades ground truth, e.g. Charades_v1_test.csv")
    parser.add_argument("--per-class", action="store_true", help="also print the AP of every class")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of text")


def run(args) -> int:
    from strg.metrics import charades_eval

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = charades_eval(args.submission, args.gt_csv)
    for w in caught:
        print(f"warning: {w.message}")
    if args.json:
        out = {k: result[k] for k in ("mAP", "wAP", "num_videos", "num_missing", "missing_classes")}
        if args.per_class:
            out["ap"] = [None if v != v else float(v) for v in result["ap"]]
        print(json.dumps(out))
        return 0
    print(f"videos: {result['num_videos']} ({result['num_missing']} missing from the submission)")
    print(f"mAP: {100 * result['mAP']:.2f}")
    print(f"wAP: {100 * result['wAP']:.2f}")
    if args.per_class:
        for c, (ap, npos) in enumerate(zip(result["ap"], result["num_positives"])):
            ap_text = "   n/a" if ap != ap else f"{100 * ap:6.2f}"
            print(f"c{c:03d} AP {ap_text}  positives {int(npos)}")
    return 0
