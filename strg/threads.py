"""How many CPU threads the ``strg`` command computes with, so that it does not oversubscribe the cores.

PyTorch starts as many intra-op threads as the machine has physical cores, whatever else runs.
When other busy processes share those cores (a second job, a browser, DataLoader workers of the
same run), its OpenMP threads wait on each other at every parallel region and a run can take 20x
longer than with one thread (BENCHMARKS.md, "Threads under a competing load").

The policy of the ``strg`` command (:func:`choose_threads`), in this order:

1. ``--threads N``: N threads.
2. ``OMP_NUM_THREADS`` set in the environment: that number (PyTorch reads it too).
3. Otherwise ``max(1, min(usable - workers, cpus - load))``: ``usable`` the cores this process may
   run on (``os.sched_getaffinity``), ``workers`` the DataLoader worker processes of the run
   (each computes with one thread: PyTorch sets that in its workers), ``cpus`` all cores and
   ``load`` the threads of other processes that want a core (the larger of the 1-minute load
   average and the threads running at start, :func:`load_average`), so that a busy machine gets
   fewer threads. Never more than PyTorch's own default (the physical cores).

The library itself (``strg.engine.train`` and the rest) leaves the thread count to the caller.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), else all cores."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def load_average(samples: int = 5, interval: float = 0.02) -> float | None:
    """How many other threads want a core: the larger of the 1-minute load average and the
    median of ``samples`` readings of the threads running right now (``/proc/loadavg``, minus
    this one), so that a job started a few seconds ago counts. None where the system gives
    neither."""
    import time

    try:
        avg = os.getloadavg()[0]
    except (AttributeError, OSError):
        avg = None
    now = []
    for i in range(samples):
        try:
            with open("/proc/loadavg") as f:
                now.append(int(f.read().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            break
        if i + 1 < samples:
            time.sleep(interval)
    current = sorted(now)[len(now) // 2] if now else None
    values = [v for v in (avg, current) if v is not None]
    return max(values) if values else None


def choose_threads(requested: int | None = None, *, workers: int = 0, environ=None, default: int | None = None,
                   cores: int | None = None, cpus: int | None = None, load: float | None = -1.0) -> ThreadChoice:
    """The number of intra-op threads for the main process (module docstring).

    ``default`` is PyTorch's own default (``torch.get_num_threads()`` before any change); ``cores``,
    ``cpus`` and ``load`` default to this machine's (tests pass them explicitly).
    """
    environ = os.environ if environ is None else environ
    if requested is not None:
        return ThreadChoice(max(1, int(requested)), "--threads")
    env = environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return ThreadChoice(int(env), "OMP_NUM_THREADS")
    cores = usable_cores() if cores is None else cores
    cpus = (os.cpu_count() or cores) if cpus is None else cpus
    load = load_average() if load == -1.0 else load
    free = cores - max(0, workers)
    parts = [f"{cores} usable cores", f"{workers} loader workers"]
    if load is not None:
        free = min(free, cpus - round(load))
        parts.append(f"load {load:.1f} on {cpus} cores")
    threads = max(1, free if default is None else min(free, default))
    return ThreadChoice(threads, ", ".join(parts))


def apply_thread_policy(requested: int | None = None, *, workers: int = 0, say=None) -> ThreadChoice:
    """Set ``torch.set_num_threads`` by :func:`choose_threads` and tell ``say`` (a function of one
    string) the choice and its reason."""
    import torch

    choice = choose_threads(requested, workers=workers, default=torch.get_num_threads())
    torch.set_num_threads(choice.threads)
    if say is not None:
        say(f"threads: {choice.threads} ({choice.reason}; --threads N or OMP_NUM_THREADS=N to choose)")
    return choice


def add_threads_argument(parser) -> None:
    """The ``--threads`` option of the commands that compute."""
    parser.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                        help="CPU threads of this process (default: the usable cores minus the data loader "
                             "workers and the machine's load; OMP_NUM_THREADS is respected)")


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


__all__ = ["ThreadChoice", "add_threads_argument", "apply_thread_policy", "choose_threads", "load_average",
           "usable_cores"]
