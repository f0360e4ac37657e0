"""The thread policy of the ``strg`` command under a competing load (strg/threads.py).

Starts ``--competitors`` busy processes (each multiplies matrices with ``--competitor-threads``
PyTorch threads, like another training job), waits ``--settle`` seconds, then times
``strg train configs/tiny_cpu.yaml`` (``--command demo``: ``strg demo --quick``) twice, in a fresh
run folder each time:

* ``no policy``: ``--threads`` set to PyTorch's default (the physical cores), what the command
  did before it had a thread policy;
* ``policy``: no option, the command chooses (usable cores minus loader workers and load).

and the same two without the competitors. OMP_NUM_THREADS is removed from the environment of the
timed commands (the policy respects it). Prints one table row per case, wall-clock seconds.

    python benchmarks/bench_threads.py                      # 2 competitors x 2 threads
    python benchmarks/bench_threads.py --competitors 4 --iterations 40
    python benchmarks/bench_threads.py --command demo --loaded-only
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMPETITOR = """
import torch, sys
torch.set_num_threads(int(sys.argv[1]))
a = torch.randn(384, 384)
while True:
    a = torch.tanh(a @ a)
"""


def time_command(command: str, extra: list[str], iterations: int, workdir: Path, name: str,
                 timeout: float) -> tuple[float, bool]:
    """Wall-clock seconds of one ``strg train`` (or ``strg demo --quick``) and whether it finished
    within ``timeout``."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if command == "demo":
        cmd = [sys.executable, "-m", "strg.cli", "demo", "--quick", "--out", str(workdir / name), *extra]
    else:
        cmd = [sys.executable, "-m", "strg.cli", "train", str(ROOT / "configs" / "tiny_cpu.yaml"),
               "--run-dir", str(workdir / name), f"train.iterations={iterations}", "train.progress=false", *extra]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        print(f"    {name}: not finished after {timeout:.0f} s (stopped)", flush=True)
        return timeout, False
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    chosen = [line for line in proc.stderr.splitlines() if "threads:" in line]
    print(f"    {name}: {seconds:.1f} s  {chosen[0].split('threads: ', 1)[1] if chosen else ''}", flush=True)
    return seconds, True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--competitors", type=int, default=2)
    parser.add_argument("--competitor-threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=20, help="train.iterations of the timed run (tiny_cpu: 20)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds between starting the load and timing")
    parser.add_argument("--timeout", type=float, default=300.0, help="stop a timed run after this many seconds")
    parser.add_argument("--command", choices=("train", "demo"), default="train",
                        help="time strg train configs/tiny_cpu.yaml (default) or strg demo --quick")
    parser.add_argument("--loaded-only", action="store_true", help="skip the runs without the added load")
    args = parser.parse_args()

    import torch

    default = torch.get_num_threads()
    print(f"cpus {os.cpu_count()}, usable {len(os.sched_getaffinity(0))}, torch default threads {default}, "
          f"torch {torch.__version__}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for loaded in (True,) if args.loaded_only else (True, False):
            procs = []
            if loaded:
                procs = [subprocess.Popen([sys.executable, "-c", COMPETITOR, str(args.competitor_threads)])
                         for _ in range(args.competitors)]
                time.sleep(args.settle)
            label = f"{args.competitors} x {args.competitor_threads}-thread load" if loaded else "no added load"
            print(f"{label} (load average {os.getloadavg()[0]:.1f}):", flush=True)
            try:
                results[(loaded, "none")] = time_command(args.command, ["--threads", str(default)], args.iterations,
                                                         work, f"nopolicy{loaded}", args.timeout)
                results[(loaded, "policy")] = time_command(args.command, [], args.iterations, work, f"policy{loaded}",
                                                           args.timeout)
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
    print("\n| load | no policy (s) | policy (s) | no policy / policy |")
    print("| --- | ---: | ---: | ---: |")
    for loaded in sorted({loaded for loaded, _ in results}, reverse=True):
        (a, a_done), (b, b_done) = results[(loaded, "none")], results[(loaded, "policy")]
        label = f"{args.competitors} x {args.competitor_threads}-thread jobs" if loaded else "none added"
        ratio = f"{a / b:.2f}" if a_done and b_done else (f"> {a / b:.1f}" if b_done else "?")
        print(f"| {label} | {'' if a_done else '> '}{a:.1f} | {'' if b_done else '> '}{b:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
