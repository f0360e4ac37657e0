"""The large-batch recipe (configs/charades/large_batch): the section 6.1 schedule, kept equivalent."""

from pathlib import Path

import pytest

from strg.config import load_config
from strg.engine import lr_at

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs" / "charades"
LARGE = PAPER / "large_batch"
# (large-batch config, the paper's config of the same stage)
PAIRS = [
    ("charades_i3d_r50_b64", "charades_i3d_r50"),
    ("charades_joint_gcn_r50_graph_b64", "charades_joint_gcn_r50_graph"),
    ("charades_joint_gcn_r50_b64", "charades_joint_gcn_r50"),
]


def _schedule(t: dict) -> dict:
    lr = t["base_lr"] * t["batch_size"] / t["base_batch"]  # the engine's linear scaling rule
    return dict(lr=lr, iterations=t["iterations"], decay_at=t["lr_decay_at"], decay=t["lr_decay"],
                warmup_iters=t["warmup_iters"], warmup_factor=t["warmup_factor"])


@pytest.mark.parametrize("large,paper", PAIRS)
def test_large_batch_schedule_is_the_papers_per_clip(large, paper):
    big = load_config(LARGE / f"{large}.yaml").to_dict()
    ref = load_config(PAPER / f"{paper}.yaml").to_dict()
    tb, tr = big["train"], ref["train"]
    # the paper's numbers (section 6.1): 8 clips per step; 100K iterations at 0.00125, x0.1 for the
    # last 10K, or 30K joint iterations at 0.000125
    assert tr["batch_size"] == 8 and tr["iterations"] in (100_000, 30_000)
    # one GPU, one forward pass of 64 clips, bf16
    assert tb["batch_size"] == tb["batch_per_device"] == 64 and tb["amp"] == "bf16"
    assert big["model"] == ref["model"] and big["data"] == ref["data"] and tb["stage"] == tr["stage"]
    sb, sr = _schedule(tb), _schedule(tr)
    # the same clips in all, the same lr per clip, the decay after the same number of clips
    assert tb["iterations"] * tb["batch_size"] == tr["iterations"] * tr["batch_size"]
    assert sb["lr"] / tb["batch_size"] == pytest.approx(sr["lr"] / tr["batch_size"])
    decay_b = round(sb["decay_at"] * sb["iterations"]) * tb["batch_size"]
    assert decay_b == round(sr["decay_at"] * sr["iterations"]) * tr["batch_size"]
    # the warmup starts at the paper's own rate and lasts a few percent of the run
    assert lr_at(0, **sb) == pytest.approx(sr["lr"])
    assert 0 < tb["warmup_iters"] <= 0.05 * tb["iterations"]
    after = tb["warmup_iters"]
    assert lr_at(after, **sb) == pytest.approx(8 * lr_at(after * 8, **sr))
    last = tb["iterations"] - 1
    assert lr_at(last, **sb) == pytest.approx(8 * lr_at(tr["iterations"] - 1, **sr))


def test_large_batch_stages_chain():
    """Each stage starts from the previous large-batch stage's default run folder."""
    graph = load_config(LARGE / "charades_joint_gcn_r50_graph_b64.yaml").train
    joint = load_config(LARGE / "charades_joint_gcn_r50_b64.yaml").train
    assert graph.init == "runs/charades_i3d_r50_b64" and joint.init == "runs/charades_joint_gcn_r50_graph_b64"
