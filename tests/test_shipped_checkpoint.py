"""The checkpoint that ships in assets/: it loads without unpickling code, rebuilds its model from the file
alone, and renders held-out built-in scenes as the README says (evaluate.py and sample.py, no training)."""

import json
import os

import pytest

import checkpoint
import evaluate
import sample
from dataset.shepard_metzler import ensure_builtin_dataset

# measured on the 32 scenes below: reconstruction IoU 0.888, generation IoU 0.799 (0.885, 0.814 on the
# README's 200), generation colour error 0.123 (mean context view 0.221), generation MSE 0.37x the mean
# context view's (the project's target for a shipped checkpoint: 0.5x)
MIN_RECONSTRUCTION_IOU, MIN_GENERATION_IOU, MAX_GENERATION_COLOUR, MAX_MSE_RATIO = 0.85, 0.75, 0.16, 0.5
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
    assert m["scenes"] == 32
    # its decoder draws the objects (z from the posterior) and, from the context alone, renders them from
    # the query camera better than any 3D-blind guess
    assert m["iou_reconstruction"] > MIN_RECONSTRUCTION_IOU
    assert m["iou_generation"] > MIN_GENERATION_IOU
    assert m["colour_error_generation"] < MAX_GENERATION_COLOUR
    assert m["mse_generation"] < MAX_MSE_RATIO * m["mse_mean_context"] and m["mse_reconstruction"] < m["mse_generation"]


def test_sample_writes_the_readmes_grid_and_orbit_from_it(test_scenes, tmp_path):
    sample.main(["--checkpoint", SHIPPED, "--data_dir", test_scenes, "--scenes", "0", "1", "--samples", "1",
                 "--frames", "4", "--out", str(tmp_path)])
    assert (tmp_path / "gqn-sm5-seed0-grid.png").stat().st_size > 0
    assert (tmp_path / "gqn-sm5-seed0-orbit.gif").stat().st_size > 0
