"""``strg train CONFIG [KEY=VALUE ...]``: train a model (one process, or several under torchrun)."""

from __future__ import annotations

import json
import sys

from strg.threads import add_threads_argument, apply_thread_policy


def add_arguments(parser) -> None:
    parser.add_argument("config", help="YAML config, e.g. configs/charades/charades_joint_gcn_r50.yaml")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides, e.g. train.iterations=1000 model.dropout=0.5")
    parser.add_argument("--run-dir", default=None, help="run folder (default: runs/<config name>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest checkpoint of the run folder; refused when there is nothing "
                             "left to train or the settings differ from the run's")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="with --resume: continue with changed settings, e.g. a larger train.iterations "
                             "(the changes are logged and the run's config.yaml is replaced)")
    add_threads_argument(parser)
    parser.epilog = (
        "Several GPUs: torchrun --nproc_per_node 4 -m strg.cli train CONFIG ... "
        "(the global batch train.batch_size stays the same; accumulation adapts)."
    )


def run(args) -> int:
    from strg.config import load_config
    from strg.engine import train
    from strg.errors import ConfigError

    if args.allow_config_change and not args.resume:
        raise ConfigError("--allow-config-change goes with --resume (it allows a resumed run to change settings)")
    workers = load_config(args.config, args.overrides).train.num_workers
    apply_thread_policy(args.threads, workers=workers, say=lambda text: print(f"strg train: {text}", file=sys.stderr))
    result = train(args.config, overrides=args.overrides, run_dir=args.run_dir, resume=args.resume,
                   allow_config_change=args.allow_config_change)
    print(json.dumps(result))
    return 0
