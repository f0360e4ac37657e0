"""Settings that are valid but train badly, told in the run's log before training starts."""

from __future__ import annotations


def frozen_bn_from_scratch(cfg) -> str | None:
    """A warning when stage ``backbone`` starts from random weights with frozen BatchNorm
    (``cfg``: a :class:`strg.config.RunConfig`).

    The paper freezes BatchNorm (section 6.1) in a backbone pretrained on ImageNet / Kinetics, whose
    statistics are meaningful. Frozen at their initial values (mean 0, variance 1, scale 1, shift 0)
    they normalise nothing: the backbone is an unnormalised deep ResNet whose activations and
    gradients grow with training, and at learning rates a normalised network takes the loss goes
    to NaN (``configs/tiny_cpu.yaml`` at lr 0.1 with frozen BN: NaN at iteration 58).
    """
    t, m = cfg.train, cfg.model
    pretrained = t.init or m.backbone_checkpoint or m.inflate_from
    if t.stage != "backbone" or pretrained or not m.frozen_bn:
        return None
    return ("warning: the backbone starts from random weights with frozen BatchNorm (model.frozen_bn=true, the "
            "paper's setting for a pretrained backbone): it then normalises nothing and training can diverge; "
            "set model.frozen_bn=false to train from scratch, or load pretrained weights (model.inflate_from, "
            "model.backbone_checkpoint)")


__all__ = ["frozen_bn_from_scratch"]
