"""``strg train CONFIG [KEY=VALUE ...]``: train a model (one process, or several under torchrun)."""

from __future__ import annotations

import json


def add_arguments(parser) -> None:
    parser.add_argument("config", help="YAML config, e.g. configs/charades/charades_joint_gcn_r50.yaml")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.iterations=1000 model.dropout=0.5")
    parser.add_argument("--run-dir", default=None, help="run folder (default: runs/<config name>)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint of the run folder")
    parser.epilog = (
        "Several GPUs: torchrun --nproc_per_node 4 -m strg.cli train CONFIG ... "
        "(the global batch train.batch_size stays the same; accumulation adapts)."
    )


def run(args) -> int:
    from strg.engine import train

    result = train(args.config, overrides=args.overrides, run_dir=args.run_dir, resume=args.resume)
    print(json.dumps(result))
    return 0
