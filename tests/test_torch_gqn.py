"""torch-gqn's own state dicts load: every key of its default model, with its shape
(tests/torch_gqn_keys.json), goes into this project's GQN through torch_gqn.load_torch_gqn_state_dict, and
back out under the same name.

The fixture is read by hand from torch-gqn's code (iShohei220/torch-gqn, commit c0156c7):
- model.py: GQN(representation="pool", L=12, shared_core=False) holds phi (Pool, Tower or Pyramid), the cores
  inference_core and generation_core as nn.ModuleLists of L cores (keys "<core>.<l>.<...>"), and three heads:
  eta_pi = Conv2d(128, 2*3, 5), eta_g = Conv2d(128, 3, 1), eta_e = Conv2d(128, 2*3, 5).
- representation.py: Tower and Pool have conv1..conv8: 3->256 k2, 256->256 k2, 256->128 k3, 128->256 k2,
  256+7->256 k3, 256+7->128 k3, 128->256 k3, 256->256 k1 (Pool's AvgPool2d(16) has no parameters).
  Pyramid's net is Sequential(Conv2d(7+3, 32, 2), ReLU, Conv2d(32, 64, 2), ReLU, Conv2d(64, 128, 2), ReLU,
  Conv2d(128, 256, 8), ReLU): parameters at indices 0, 2, 4 and 6.
- core.py: InferenceCore has downsample_x = Conv2d(3, 3, 4), upsample_v = ConvTranspose2d(7, 7, 16),
  upsample_r = ConvTranspose2d(256, 256, 16), downsample_u = Conv2d(128, 128, 4), all without bias, and
  core = Conv2dLSTMCell(3+7+256+2*128, 128, 5). GenerationCore has upsample_v and upsample_r as above,
  core = Conv2dLSTMCell(7+256+3, 128, 5) and upsample_h = ConvTranspose2d(128, 128, 4), without bias.
  A ConvTranspose2d's weight is (in, out, k, k), a Conv2d's (out, in, k, k).
- conv_lstm.py: Conv2dLSTMCell(in, out) adds out to in (its gates read [hidden, input]) and holds four
  Conv2d(in + out, out, 5) with biases, named forget, input, output and state.
- train.py saves model.state_dict(), which with several --device_ids is nn.DataParallel's: "module." before
  every key.
The pool model's parameters then number 571,619,279.

The default model is 2.3 GB of float32: the tensors here are on the meta device (shapes, no data). That the
converted weights compute what torch-gqn computes is tested on small models in tests/test_model.py.
"""

import json
import os

import pytest
import torch

from conftest import ROOT
from model import GQN
from torch_gqn import load_torch_gqn_state_dict, to_torch_gqn_state_dict

with open(os.path.join(ROOT, "tests", "torch_gqn_keys.json")) as f:
    TORCH_GQN = {name: {key: tuple(shape) for key, shape in shapes.items()}
                 for name, shapes in json.load(f)["state_dicts"].items()}


def test_the_fixture_is_torch_gqns_default_model():
    count = {name: sum(torch.Size(shape).numel() for shape in shapes.values()) for name,
             shapes in TORCH_GQN.items()}
    assert count["pool"] == count["tower"] == 571_619_279
    assert sum(key.startswith("inference_core.11.core.forget.") for key in TORCH_GQN["pool"]) == 2   # L 12
    gate_inputs = 3 + 7 + 256 + 128 + 128 + 128      # x, v, r, h_g, u, and its own hidden state
    assert TORCH_GQN["pool"]["inference_core.0.core.state.weight"] == (128, gate_inputs, 5, 5)


@pytest.mark.parametrize("viewpoint_order", ["torch-gqn", "deepmind"])
@pytest.mark.parametrize("prefix", ["", "module."])
@pytest.mark.parametrize("representation", ["pool", "tower", "pyramid"])
def test_torch_gqns_default_state_dict_loads_with_every_key_used(representation, prefix, viewpoint_order):
    shapes = TORCH_GQN[representation]
    state = {prefix + key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
    with torch.device("meta"):
        model = GQN(representation=representation)          # the paper's model: L 12, no shared core
    assert (model.L, model.shared_core, model.h_dim) == (12, False, 128)
    # strict: a key of torch-gqn's the model lacks, one of the model's it lacks, or another shape, fails
    load_torch_gqn_state_dict(model, state, viewpoint_order)
    # every number of torch-gqn's goes into the model, and each of the model's comes from torch-gqn
    assert sum(p.numel() for p in model.state_dict().values()) == sum(t.numel() for t in state.values())
    back = to_torch_gqn_state_dict(model.state_dict())
    assert {key: tuple(t.shape) for key, t in back.items()} == shapes
