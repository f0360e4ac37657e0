"""The strg command's thread policy and the progress bars written to files."""

import io
import time

import pytest
import torch

from strg.progress import progress_bar
from strg.threads import apply_thread_policy, choose_threads


def test_choose_threads():
    quiet = {"environ": {}, "cores": 8, "cpus": 8, "load": 0.0, "default": 8}
    assert choose_threads(**quiet).threads == 8
    assert choose_threads(workers=3, **quiet).threads == 5  # the loader workers get their own cores
    assert choose_threads(workers=12, **quiet).threads == 1  # never below one
    busy = dict(quiet, load=6.4)  # six other threads want a core
    assert choose_threads(**busy).threads == 2 and "load 6.4" in choose_threads(**busy).reason
    assert choose_threads(**dict(quiet, default=4)).threads == 4  # never above PyTorch's default
    assert choose_threads(**dict(quiet, cores=2)).threads == 2  # CPU affinity: 2 of the 8 cores
    assert choose_threads(**dict(quiet, load=None)).threads == 8  # no load information
    # explicit choices win, in this order
    assert choose_threads(3, **dict(busy, environ={"OMP_NUM_THREADS": "5"})).threads == 3
    assert choose_threads(**dict(busy, environ={"OMP_NUM_THREADS": "5"})) .threads == 5
    assert choose_threads(**dict(busy, environ={"OMP_NUM_THREADS": "junk"})).threads == 2


def test_apply_sets_torch_threads_and_says_why():
    before = torch.get_num_threads()
    said = []
    try:
        choice = apply_thread_policy(1, say=said.append)
        assert torch.get_num_threads() == 1 == choice.threads
        assert said == ["threads: 1 (--threads; --threads N or OMP_NUM_THREADS=N to choose)"]
    finally:
        torch.set_num_threads(before)


def test_cli_threads_option(tmp_path, capsys):
    from pathlib import Path

    from strg.cli import main

    tiny = str(Path(__file__).resolve().parents[1] / "configs" / "tiny_cpu.yaml")
    before = torch.get_num_threads()
    try:
        assert main(["train", tiny, "--threads", "1", "train.iterations=1", "train.progress=false", "eval.split=null",
                     "--run-dir", str(tmp_path / "run")]) == 0
        assert "strg train: threads: 1 (--threads" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit):
        main(["train", tiny, "--threads", "0"])


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_in_a_file_writes_few_lines(monkeypatch):
    monkeypatch.setenv("STRG_PROGRESS_INTERVAL", "0.2")
    log = io.StringIO()
    bar = progress_bar(total=400, desc="train", file=log)
    t0 = time.time()
    for _ in range(400):
        time.sleep(0.002)
        bar.update(1)
    bar.close()
    elapsed = time.time() - t0
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert 1 <= len(lines) <= elapsed / 0.2 + 3  # one line per interval at most, plus the first and the last
    assert lines[-1].startswith("train: 100%") and "400/400" in lines[-1]

    term = FakeTerminal()  # a terminal: tqdm's own redraws
    bar = progress_bar(total=3, desc="train", file=term)
    bar.update(3)
    bar.close()
    assert "\r" in term.getvalue()
