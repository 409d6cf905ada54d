"""train.py's own path, without --train_data_dir: it renders the built-in scenes into --data_root once,
trains on them, and takes K (the most context views) from them."""

import importlib.util
import inspect
import json
import math
import os

import pytest

import checkpoint
import gqn_dataset
import train
from conftest import TINY_MODEL


@pytest.mark.parametrize("builtin, folder, views, most_context", [
    ("shepard_metzler", "shepard_metzler_7_parts", 15, 14),   # the paper's K 15, less one of its 15 views
    ("rooms", "rooms_ring_camera", 10, 5),                     # the paper's K for rooms_ring_camera
    ("rooms_free_camera_no_object_rotations", "rooms_free_camera_no_object_rotations", 10, 5),
    ("rooms_free_camera_with_object_rotations", "rooms_free_camera_with_object_rotations", 10, 5),
    ("mazes", "mazes", 300, 20),                               # the paper's K for mazes (Labyrinth)
    ("jaco", "jaco", 11, 7),                                   # the paper's K for jaco (MuJoCo)
])
def test_without_train_data_dir_it_renders_the_builtin_scenes_and_trains_on_them(
        builtin, folder, views, most_context, tmp_path, monkeypatch):
    if (builtin == "jaco" and importlib.util.find_spec("mujoco") is None
            and not os.environ.get("GQN_REQUIRE_MUJOCO")):
        pytest.skip("MuJoCo is not installed (pip install -r requirements-jaco.txt)")
    loaders = []
    real = gqn_dataset.make_loader

    def spy(*args, **kwargs):                 # what the training batches are drawn from, and with which K
        loaders.append(inspect.signature(real).bind(*args, **kwargs).arguments)
        return real(*args, **kwargs)
    monkeypatch.setattr(gqn_dataset, "make_loader", spy)
    data_root = tmp_path / "data"
    steps = train.train(train.parse_args([
        "--data_root", str(data_root), "--builtin", builtin, "--builtin_train_scenes", "8",
        "--builtin_test_scenes", "4", *TINY_MODEL, "--eval_scenes", "4", "--gradient_steps", "2",
        "--log_interval", "2", "--seed", "0", "--root_log_dir", str(tmp_path / "runs"), "--log_dir", "run"]))
    assert steps == 2

    # the scenes, rendered under --data_root
    root = data_root / folder
    rendered = {split: gqn_dataset.SceneViews(str(root / split)) for split in ("train", "test")}
    assert (len(rendered["train"]), len(rendered["test"])) == (8, 4)
    assert rendered["train"].num_views == views
    # trained on them, with K from them
    assert len(loaders) == 1, "train.py no longer draws its batches through gqn_dataset.make_loader"
    assert os.path.samefile(loaders[0]["root_dir"], root / "train")
    assert loaders[0]["max_context"] == most_context
    run_dir = tmp_path / "runs" / "run"
    state = checkpoint.load(checkpoint.latest(run_dir / "checkpoints"))
    assert state["step"] == 2 and not state["args"]["train_data_dir"] and state["args"]["builtin"] == builtin
    with open(run_dir / "metrics.jsonl") as f:
        assert [json.loads(line)["step"] for line in f] == [1, 2]
    # and scored the rendered test split at the end (rooms' and mazes' with their labels: walls and floors;
    # objects only in rooms)
    with open(run_dir / "final.json") as f:
        final = json.load(f)
    assert final["mse_generation"] > 0
    assert ("wall_error_generation" in final) == (builtin not in ("shepard_metzler", "jaco"))   # labels
    if builtin == "jaco":                                 # jaco's own regions
        assert {"arm_error_generation", "target_iou_generation", "floor_error_generation"} <= set(final)
    elif builtin != "shepard_metzler":
        assert math.isnan(final["object_error_generation"]) == (builtin == "mazes")
