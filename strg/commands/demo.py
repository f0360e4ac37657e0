"""``strg demo``: synthetic data -> I3D, the four region variants of Table 2a and the "+ box geometry"
rows -> a report (several seeds: one per seed and their summary)."""

from __future__ import annotations

import argparse
import sys

from strg.threads import add_threads_argument, apply_thread_policy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small preset, about 20 s on 2 CPU cores (CI smoke test)")
    parser.add_argument("--out", default="strg-demo", help="report folder (default ./strg-demo)")
    parser.add_argument("--seed", type=int, action="append", default=None,
                        help="data and training seed (default 0); the same seed and the same --threads give the same "
                             "table (the number of threads changes the floating-point sums). Repeat it (--seed 0 "
                             "--seed 1) for one report per seed in OUT/seed-S and their summary in OUT/summary.md")
    parser.add_argument("--variant", choices=("something", "charades"), default="something",
                        help="single-label Something-Something format (top-1/top-5) or multi-label Charades "
                             "format (mAP)")
    parser.add_argument("--data-dir", default=None,
                        help="synthetic data folder (default OUT/data/...; reused when the settings match)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the runs of OUT that finished with the same config (e.g. the I3D), train the others")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change a preset value, e.g. --set backbone_iters=1000 (see strg/demo.py PRESETS)")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="runs that may train at once once the I3D is trained, each in its own process with one "
                             "thread (default: the number of threads; 1: one after the other)")
    add_threads_argument(parser)


def run(args: argparse.Namespace) -> int:
    import yaml

    from strg.demo import PRESETS, run_demo, run_demos
    from strg.errors import ConfigError

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"demo: --set {item!r}: expected KEY=VALUE")
        v = yaml.safe_load(value)
        overrides[key.strip()] = tuple(v) if isinstance(v, list) else v
    workers = overrides.get("num_workers", PRESETS["quick" if args.quick else "default"].num_workers)
    # The demo's loader workers decode 64-px clips, about a fifth of a core each (2.7 ms per clip
    # against about 13 ms of training compute), so they count as workers // 5 cores: on a quiet
    # 2-core machine the I3D then trains with 2 threads at 76-80 clips/s, not 1 at 53-63 (docs/demo.md).
    workers = workers if isinstance(workers, int) else 0
    apply_thread_policy(args.threads, workers=workers // 5,
                        say=lambda text: print(f"strg demo: {text}", file=sys.stderr))
    seeds = args.seed or [0]
    kwargs = {"quick": args.quick, "variant": args.variant, "overrides": overrides, "reuse": args.reuse,
              "jobs": args.jobs}
    if len(seeds) > 1:
        if args.data_dir is not None:
            raise ConfigError("demo: --data-dir takes one seed's data; with several --seed each makes its own")
        run_demos(args.out, seeds, **kwargs)
    else:
        run_demo(args.out, seed=seeds[0], data_dir=args.data_dir, **kwargs)
    return 0
