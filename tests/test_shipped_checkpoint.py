"""The checkpoints that ship in assets/: each loads without unpickling code, rebuilds its model from the file
alone, and renders held-out built-in scenes as the README says (evaluate.py and sample.py, no training)."""

import json
import os

import pytest

import checkpoint
import evaluate
import explore
import sample
from dataset.rooms import ensure_builtin_rooms
from dataset.shepard_metzler import ensure_builtin_dataset

HERE = os.path.dirname(os.path.abspath(__file__))
ASSETS = os.path.join(os.path.dirname(HERE), "assets")
# per checkpoint: its file, evaluate.py's numbers for it on the first 32 test scenes of its built-in data (seed 0,
# 3 context views, batch 32) recorded when it shipped, and its configuration. The evaluation is deterministic on a
# CPU, up to the rounding that another CPU's kernels (AVX-512 against AVX2) or thread count make in the model's sums.
SHIPPED = {
    "sm5": dict(path=os.path.join(ASSETS, "gqn-sm5.pt"), recorded=os.path.join(HERE, "shipped_checkpoint_eval.json"),
                data_root="data", representation="geometric_fine", observation="render_gate"),
    "rooms": dict(path=os.path.join(ASSETS, "gqn-rooms.pt"), recorded=os.path.join(HERE, "shipped_rooms_eval.json"),
                  data_root="data/rooms20k", representation="tower", observation="eta_g"),
}
BASELINES = ("_black", "_mean_context", "_nearest_context")


@pytest.fixture(scope="module")
def test_scenes(tmp_path_factory):
    """kind -> the first 32 built-in test scenes of the checkpoint's data: the same bytes as the split it was
    measured on (scene i of a split depends only on the seed, the split and i)."""
    root = tmp_path_factory.mktemp("shipped")
    return {"sm5": ensure_builtin_dataset(str(root / "sm5"), parts=5, train_scenes=1, test_scenes=32, seed=0,
                                          workers=1)[1],
            "rooms": ensure_builtin_rooms(str(root / "rooms"), 1, 32, seed=0, workers=1, progress=False)[1]}


@pytest.mark.parametrize("kind", SHIPPED)
def test_the_shipped_checkpoint_is_small_safe_and_self_describing(kind):
    shipped = SHIPPED[kind]
    assert os.path.getsize(shipped["path"]) < 25 * 2 ** 20
    state = checkpoint.load(shipped["path"])             # torch.load(weights_only=True)
    assert "optimizer" not in state and state["args"]["data_root"] == shipped["data_root"]
    assert not state["args"].get("train_data_dir")       # its test split is found (or rendered) from the flags
    model = checkpoint.rebuild_model(state)
    assert model.config["representation"] == shipped["representation"]
    assert model.config["observation"] == shipped["observation"] and model.config["L"] == state["args"]["layers"]


@pytest.mark.parametrize("kind", SHIPPED)
def test_the_shipped_checkpoint_renders_held_out_scenes(kind, test_scenes, tmp_path):
    out = tmp_path / "eval.json"
    evaluate.main(["--checkpoint", SHIPPED[kind]["path"], "--data_dir", test_scenes[kind], "--out", str(out),
                   "--no_progress"])
    with open(out) as f:
        m = json.load(f)
    with open(SHIPPED[kind]["recorded"]) as f:
        recorded = json.load(f)
    assert (m["scenes"], m["context"], m["seed"], m["batch_size"]) == (32, 3, 0, 32)
    for name, value in recorded.items():
        if name.endswith(BASELINES) and isinstance(value, float):
            assert m[name] == pytest.approx(value, rel=1e-6), name            # the data's alone: exact
        elif "iou_" in name:
            assert m[name] == pytest.approx(value, abs=2e-3), name            # a few pixels of 32 scenes
        elif isinstance(value, float):
            assert m[name] == pytest.approx(value, rel=2e-3, abs=1e-4), name
    # what those numbers say: from the context alone it renders the scene better than any 3D-blind guess
    if kind == "sm5":
        assert m["mse_generation"] < 0.5 * m["mse_mean_context"] and m["iou_generation"] > m["iou_mean_context"] + 0.15
    else:
        better = min(m["mse_mean_context"], m["mse_nearest_context"])
        assert m["mse_generation"] < better
        assert m["wall_error_generation"] < m["wall_error_mean_context"]
        assert m["floor_error_generation"] < m["floor_error_mean_context"]


@pytest.mark.parametrize("kind", SHIPPED)
def test_sample_writes_the_readmes_grid_and_orbit_from_it(kind, test_scenes, tmp_path):
    sample.main(["--checkpoint", SHIPPED[kind]["path"], "--data_dir", test_scenes[kind], "--scenes", "0", "1",
                 "--samples", "1", "--frames", "4", "--out", str(tmp_path)])
    stem = os.path.splitext(os.path.basename(SHIPPED[kind]["path"]))[0]
    assert (tmp_path / f"{stem}-seed0-grid.png").stat().st_size > 0
    assert (tmp_path / f"{stem}-seed0-orbit.gif").stat().st_size > 0


def test_the_explorer_walks_the_rooms_checkpoints_ring(test_scenes):
    args = explore.parse_args(["--checkpoint", SHIPPED["rooms"]["path"], "--data_dir", test_scenes["rooms"],
                               "--port", "0", "--device", "cpu"])
    server, explorer = explore.build(args)
    server.server_close()
    info = explorer.scene_info(0)
    assert all(abs(c["pitch"]) < 1e-3 and abs(c["distance"] - 3.0) < 1e-3 for c in info["cameras"])   # the ring
    between = (info["cameras"][0]["yaw"] + info["cameras"][1]["yaw"]) / 2
    status, kind, body, headers = explorer.handle("/api/render.png", {
        "scene": ["0"], "context": [",".join(map(str, info["context"]))], "yaw": [f"{between}"], "pitch": ["0"],
        "distance": ["3"]})
    assert (status, kind) == (200, "image/png") and body.startswith(b"\x89PNG")

