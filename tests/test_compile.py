"""The whole model under ``torch.compile(fullgraph=True)``: one graph, the outputs and gradients of eager.

The CPU test uses the ``aot_eager`` backend: TorchDynamo captures the whole forward (fullgraph:
any graph break fails the test) and AOTAutograd traces the backward, which is where whole-model
compilation breaks; Inductor's code generation on top of the same graphs takes about 3 minutes
on the CPU for the tiny Joint GCN, so it is checked by ``python benchmarks/check_compile.py``
(CPU or GPU; BENCHMARKS.md) rather than here. Dropout is set to 0: compiled and eager draw
different masks.
"""

import pytest
import torch
from test_models import TINY, tiny_inputs

from strg.models import build_model

pytestmark = pytest.mark.slow  # about 25 s on 2 CPU cores


@pytest.mark.parametrize("name", ["i3d_r50", "joint_gcn_r50"])
def test_whole_model_compiles_to_one_graph_and_matches_eager(name):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build_model(name, num_classes=3, dropout=0.0, **TINY)  # roi_impl "auto": sparse eager on the CPU
    clips, boxes, mask = tiny_inputs()
    probe = torch.randn(2, 3, generator=torch.Generator().manual_seed(1))

    def step(fn):
        model.zero_grad(set_to_none=True)
        out = fn(clips, boxes, mask)
        (out * probe).sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    out_e, grads_e = step(model)
    # fullgraph: a graph break (such as the sparse RoIAlign's host syncs) raises instead of splitting
    out_c, grads_c = step(torch.compile(model, fullgraph=True, backend="aot_eager"))
    torch.testing.assert_close(out_c, out_e)
    assert grads_c.keys() == grads_e.keys() and len(grads_e) > 10
    for n in grads_e:
        torch.testing.assert_close(grads_c[n], grads_e[n], msg=n)
    if name == "joint_gcn_r50":  # the graph head is in the graph and trains
        assert sum(float(g.abs().sum()) for n, g in grads_c.items() if n.startswith("graph_head.")) > 0
