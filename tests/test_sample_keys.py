"""Training randomness keyed to the sample: dropout masks and augmentation do not depend on the
number of processes, micro-batches or loader workers (strg/engine/sample_keys.py)."""

import pytest
import torch

from strg.engine import train
from strg.engine.checkpoint import list_checkpoints, load_checkpoint
from strg.engine.sample_keys import KeyedItems, sample_key
from strg.models.strg import keyed_dropout

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_keyed_dropout_depends_on_the_key_alone():
    x = torch.ones(3, 4000)
    keys = torch.tensor([11, 12, 13])
    out = keyed_dropout(x, 0.25, keys)
    # a row is the same alone, in another batch, or after other draws of the global generator
    torch.rand(100)
    alone = keyed_dropout(x[1:2], 0.25, keys[1:2])
    assert torch.equal(out[1], alone[0])
    assert torch.equal(keyed_dropout(x[[2, 0]], 0.25, keys[[2, 0]]), out[[2, 0]])
    assert not torch.equal(out[0], out[1])  # other keys, other masks
    # inverted dropout: kept entries scaled by 1 / (1 - p), about 1 - p of them kept
    assert torch.allclose(out.unique(), torch.tensor([0.0, 1 / 0.75]))
    assert abs((out != 0).float().mean().item() - 0.75) < 0.02
    assert torch.equal(keyed_dropout(x, 0.0, keys), x)


def test_keyed_items_seed_the_read():
    class Draw(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"value": torch.rand(3)}  # augmentation-like draw from the global generator

    items = KeyedItems(Draw(), seed=5)
    a = items[(1, 17)]
    torch.rand(10)
    b = items[(1, 17)]
    assert torch.equal(a["value"], b["value"]) and a["sample_key"] == sample_key(5, 17)
    assert not torch.equal(items[(1, 18)]["value"], a["value"])  # another stream position
    assert sample_key(5, 17) != sample_key(6, 17) and 0 <= sample_key(5, 17) < 2**63


class Jitter(torch.utils.data.Dataset):
    """Random clips plus an augmentation drawn from torch's global generator in __getitem__, as the
    video datasets draw their clip start, scale, crop and flip (in the worker that reads the item)."""

    def __init__(self, base):
        self.base = base
        self.classes, self.multi_label, self.videos = base.classes, base.multi_label, base.videos
        self.max_boxes = base.max_boxes

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        item = dict(self.base[i])
        item["clip"] = item["clip"] + torch.rand(()) * 2 - 1  # a random brightness shift
        return item


def _run(tmp_path, name, batch_per_device, num_workers):
    from strg.data import build_dataset

    cfg = {
        "model": {"name": "joint_gcn_r50", "width": 4, "stage_blocks": [1, 1, 1, 1], "dim": 8, "gcn_layers": 1,
                  "dropout": 0.5},
        "data": {"kind": "random", "num_videos": 8, "num_classes": 3, "frames": 2, "size": 32, "boxes_per_frame": 2},
        "train": {"iterations": 3, "batch_size": 4, "batch_per_device": batch_per_device, "base_lr": 0.2,
                  "base_batch": 4, "checkpoint_period": 3, "num_workers": num_workers, "device": "cpu",
                  "tensorboard": False, "progress": False},
        "eval": {"split": None},
    }
    data = build_dataset("random", split="train", training=True, num_videos=8, num_classes=3, frames=2, size=32,
                                boxes_per_frame=2)
    train(cfg, run_dir=tmp_path / name, train_set=Jitter(data))
    return load_checkpoint(list_checkpoints(tmp_path / name)[-1][1])["model"]


@pytest.mark.slow
def test_dropout_and_augmentation_independent_of_micro_batches_and_workers(tmp_path):
    """Dropout 0.5 and a random augmentation: 2 x 2 clips read in the main process, 2 x 2 clips read
    by 2 loader workers and 4 x 1 clip end with the same weights. (BatchNorm is frozen, as by
    default: trainable BatchNorm normalises over the micro-batch, which batch_per_device changes.)"""
    ref = _run(tmp_path, "b2w0", 2, 0)
    moved = [k for k, v in ref.items() if k.startswith("graph_head") and v.abs().sum() > 0]
    assert moved  # the graph head (zero at init) was trained
    workers = _run(tmp_path, "b2w2", 2, 2)
    for k in ref:  # the same computation in the same order: bit-identical
        torch.testing.assert_close(workers[k], ref[k], rtol=0, atol=0, msg=k)
    accumulated = _run(tmp_path, "b1w0", 1, 0)
    for k in ref:  # gradients summed in another order
        torch.testing.assert_close(accumulated[k], ref[k], rtol=1e-5, atol=1e-6, msg=k)
