"""The checkpoint that ships in assets/: it loads without unpickling code, rebuilds its model from the file
alone, and renders held-out built-in scenes as the README says (evaluate.py and sample.py, no training)."""

import json
import os

import pytest

import checkpoint
import evaluate
import sample
from dataset.shepard_metzler import ensure_builtin_dataset

# evaluate.py's numbers for the checkpoint on the 32 scenes below (seed 0, 3 context views, batch 32), recorded
# when it shipped: the evaluation is deterministic on a CPU, up to the rounding that another CPU's kernels
# (AVX-512 against AVX2) or thread count make in the model's sums
RECORDED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shipped_checkpoint_eval.json")
SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "gqn-sm5.pt")


@pytest.fixture(scope="module")
def test_scenes(tmp_path_factory):
    """The first built-in 5-cube test scenes: the same bytes as the split the checkpoint was measured on
    (scene i of a split depends only on the seed, the split and i)."""
    root = tmp_path_factory.mktemp("shipped") / "shepard_metzler_5_parts"
    return ensure_builtin_dataset(str(root), parts=5, train_scenes=1, test_scenes=32, seed=0, workers=1)[1]


def test_the_shipped_checkpoint_is_small_safe_and_self_describing():
    assert os.path.getsize(SHIPPED) < 25 * 2 ** 20
    state = checkpoint.load(SHIPPED)                      # torch.load(weights_only=True)
    assert "optimizer" not in state and state["args"]["data_root"] == "data"
    model = checkpoint.rebuild_model(state)
    assert model.config["representation"] == "geometric_fine" and model.config["observation"] == "render_gate"
    assert model.config["L"] == state["args"]["layers"]


def test_the_shipped_checkpoint_renders_held_out_scenes(test_scenes, tmp_path):
    out = tmp_path / "eval.json"
    evaluate.main(["--checkpoint", SHIPPED, "--data_dir", test_scenes, "--out", str(out), "--no_progress"])
    with open(out) as f:
        m = json.load(f)
    with open(RECORDED) as f:
        recorded = json.load(f)
    assert (m["scenes"], m["context"], m["seed"], m["batch_size"]) == (32, 3, 0, 32)
    for name, value in recorded.items():
        if name.startswith(("mse_", "colour_error_", "iou_")) and name.endswith(BASELINES):
            assert m[name] == pytest.approx(value, rel=1e-6), name            # the data's alone: exact
        elif name.startswith("iou_"):
            assert m[name] == pytest.approx(value, abs=2e-3), name            # a few pixels of 32 scenes
        elif isinstance(value, float):
            assert m[name] == pytest.approx(value, rel=2e-3), name
    # what those numbers say: from the context alone it renders the objects better than any 3D-blind guess
    assert m["mse_generation"] < 0.5 * m["mse_mean_context"] and m["iou_generation"] > m["iou_mean_context"] + 0.15


BASELINES = ("_black", "_mean_context", "_nearest_context")


def test_sample_writes_the_readmes_grid_and_orbit_from_it(test_scenes, tmp_path):
    sample.main(["--checkpoint", SHIPPED, "--data_dir", test_scenes, "--scenes", "0", "1", "--samples", "1",
                 "--frames", "4", "--out", str(tmp_path)])
    assert (tmp_path / "gqn-sm5-seed0-grid.png").stat().st_size > 0
    assert (tmp_path / "gqn-sm5-seed0-orbit.gif").stat().st_size > 0
