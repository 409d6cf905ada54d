"""The checkpoints that ship in assets/: each loads without unpickling code, rebuilds its model from the file
alone, and renders held-out built-in scenes as the README says (evaluate.py and sample.py, no training)."""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image, ImageSequence

import checkpoint
import evaluate
import explore
import sample
from conftest import ROOT

HERE = os.path.join(ROOT, "tests")
ASSETS = os.path.join(ROOT, "assets")
# per checkpoint: its file, evaluate.py's numbers for it on the first 32 test scenes of its built-in data
# (seed 0, 3 context views, batch 32) recorded when it shipped, and its configuration. The evaluation is
# deterministic on a CPU, up to the rounding that another CPU's kernels (AVX-512 against AVX2) or thread count
# make in the model's sums.
SHIPPED = {
    "sm5": dict(path=os.path.join(ASSETS, "gqn-sm5.pt"),
                recorded=os.path.join(HERE, "shipped_checkpoint_eval.json"), data_root="data",
                representation="geometric_fine", observation="render_gate"),
    "rooms": dict(path=os.path.join(ASSETS, "gqn-rooms.pt"),
                  recorded=os.path.join(HERE, "shipped_rooms_eval.json"), data_root="data/rooms20k",
                  representation="tower", observation="eta_g"),
    "rooms_geometric": dict(path=os.path.join(ASSETS, "gqn-rooms-geometric.pt"),
                            recorded=os.path.join(HERE, "shipped_rooms_geometric_eval.json"),
                            data_root="data/rooms20k", representation="geometric_rooms",
                            observation="render_gate", scenes="rooms"),
}
# what each checkpoint's generations reach against the mean of the context views, in MSE (a ratio below it)
BEATS_MEAN_CONTEXT = {"sm5": 0.5, "rooms": 1.0, "rooms_geometric": 0.8}
BASELINES = ("_black", "_mean_context", "_nearest_context")
RECORDED_SCENES = 32
TILE = 64 + 2                  # a view and the grid's 2-pixel gap (images.make_grid)


@pytest.fixture(scope="module")
def test_scenes(seed0_scenes):
    """kind -> the built-in test split of the checkpoint's data (seed 0), whose first 32 scenes are the same
    bytes as the ones it was measured on (scene i of a split depends only on the seed, the split and i)."""
    return {kind: seed0_scenes(SHIPPED[kind].get("scenes", kind), splits=("test",))[1] for kind in SHIPPED}


def recorded(kind):
    with open(SHIPPED[kind]["recorded"]) as f:
        return json.load(f)


def mse(a, b):
    return float(((a - b) ** 2).mean())


def decode(png_or_path):
    """A PNG (bytes or a path) -> (H, W, 3) floats in [0, 1]."""
    source = io.BytesIO(png_or_path) if isinstance(png_or_path, bytes) else png_or_path
    with Image.open(source) as im:
        return np.asarray(im.convert("RGB")).astype(np.float64) / 255


@pytest.mark.parametrize("kind", SHIPPED)
def test_the_shipped_checkpoint_is_small_safe_and_self_describing(kind):
    shipped = SHIPPED[kind]
    assert os.path.getsize(shipped["path"]) < 25 * 2 ** 20
    state = checkpoint.load(shipped["path"])             # torch.load(weights_only=True)
    assert "optimizer" not in state and state["args"]["data_root"] == shipped["data_root"]
    # its test split is found (or rendered) from the flags
    assert not state["args"].get("train_data_dir")
    model = checkpoint.rebuild_model(state)
    assert model.config["representation"] == shipped["representation"]
    assert model.config["observation"] == shipped["observation"]
    assert model.config["L"] == state["args"]["layers"]


@pytest.mark.parametrize("kind", SHIPPED)
def test_the_shipped_checkpoint_renders_held_out_scenes(kind, test_scenes, tmp_path):
    out = tmp_path / "eval.json"
    evaluate.main(["--checkpoint", SHIPPED[kind]["path"], "--data_dir", test_scenes[kind], "--out", str(out),
                   "--scenes", str(RECORDED_SCENES), "--no_progress"])
    with open(out) as f:
        m = json.load(f)
    assert (m["scenes"], m["context"], m["seed"], m["batch_size"]) == (32, 3, 0, 32)
    for name, value in recorded(kind).items():
        if name.endswith(BASELINES) and isinstance(value, float):
            assert m[name] == pytest.approx(value, rel=1e-6), name            # the data's alone: exact
        elif "iou_" in name:
            assert m[name] == pytest.approx(value, abs=2e-3), name            # a few pixels of 32 scenes
        elif isinstance(value, float):
            assert m[name] == pytest.approx(value, rel=2e-3, abs=1e-4), name
    # what those numbers say: from the context alone it renders the scene better than any 3D-blind guess
    if kind == "sm5":
        assert m["mse_generation"] < 0.5 * m["mse_mean_context"]
        assert m["iou_generation"] > m["iou_mean_context"] + 0.15
    else:
        better = min(m["mse_mean_context"], m["mse_nearest_context"])
        assert m["mse_generation"] < better
        assert m["wall_error_generation"] < m["wall_error_mean_context"]
        assert m["floor_error_generation"] < m["floor_error_mean_context"]


def better_than_mean_context(kind, generation, mean_context):
    """What the evaluation says of each checkpoint's generations against the mean of the context views."""
    return generation < BEATS_MEAN_CONTEXT[kind] * mean_context


@pytest.mark.parametrize("kind", SHIPPED)
def test_sample_renders_the_recorded_scenes_better_than_their_mean_context_and_an_orbit_that_turns(
        kind, test_scenes, tmp_path):
    """sample.py's grid of the 32 recorded scenes, one prior sample each: its context and truth tiles are the
    views evaluate.py scored (their mean's MSE is the recorded one) and its samples beat that baseline as the
    evaluation does; each frame of its orbit shows another view, beside context views that stand still."""
    frames = 3
    grid, orbit = sample.main(["--checkpoint", SHIPPED[kind]["path"], "--data_dir", test_scenes[kind],
                               "--scenes", *map(str, range(RECORDED_SCENES)), "--samples", "1",
                               "--frames", str(frames), "--out", str(tmp_path)])
    stem = os.path.splitext(os.path.basename(SHIPPED[kind]["path"]))[0]
    assert (grid, orbit) == (str(tmp_path / f"{stem}-seed0-grid.png"),
                             str(tmp_path / f"{stem}-seed0-orbit.gif"))
    # per scene: 3 context | truth | reconstruction | sample
    picture = decode(grid)
    assert picture.shape == (RECORDED_SCENES * TILE + 2, 6 * TILE + 2, 3)

    def tiles(column):
        return np.stack([picture[2 + s * TILE:2 + s * TILE + 64, 2 + column * TILE:2 + column * TILE + 64]
                         for s in range(RECORDED_SCENES)])
    truth, generation = tiles(3), tiles(5)
    mean_context = (tiles(0) + tiles(1) + tiles(2)) / 3
    assert mse(mean_context, truth) == pytest.approx(recorded(kind)["mse_mean_context"], rel=1e-4)
    assert better_than_mean_context(kind, mse(generation, truth), mse(mean_context, truth))
    with Image.open(orbit) as im:
        # Pillow merges a frame into the one before where the two are equal
        assert im.n_frames == frames
        shown = [np.asarray(f.convert("RGB")).astype(np.int16) for f in ImageSequence.Iterator(im)]
    # the orbit view, right of the context views
    views = [f[:, 3 * TILE + 2:4 * TILE] for f in shown]
    assert all(np.abs(views[i] - views[j]).mean() > 1 for i in range(frames) for j in range(i))
    assert all(np.array_equal(shown[0][:, :3 * TILE], f[:, :3 * TILE]) for f in shown)


def explorer_on(kind, test_scenes):
    args = explore.parse_args(["--checkpoint", SHIPPED[kind]["path"], "--data_dir", test_scenes[kind],
                               "--port", "0", "--device", "cpu"])
    server, explorer = explore.build(args)
    server.server_close()
    return explorer


def render(explorer, scene, context, camera):
    """The explorer's image (a decoded PNG) of a scene from a camera (yaw, pitch, distance) given context
    views."""
    status, kind, body, _ = explorer.handle("/api/render.png", {
        "scene": [str(scene)], "context": [",".join(map(str, context))], "yaw": [repr(camera["yaw"])],
        "pitch": [repr(camera["pitch"])], "distance": [repr(camera["distance"])]})
    assert (status, kind) == (200, "image/png"), body[:200]
    return decode(body)


@pytest.mark.parametrize("kind", SHIPPED)
def test_the_explorer_renders_the_recorded_scenes_query_views_better_than_their_mean_context(
        kind, test_scenes):
    """The page as it opens on each of the 32 recorded scenes (evaluate.py's context views, the camera at its
    query view): its images are nearer the true query views than the mean of the context views is."""
    explorer = explorer_on(kind, test_scenes)
    rendered, mean_context = [], []
    for scene in range(RECORDED_SCENES):
        info = explorer.scene_info(scene)
        views = {j: decode(explorer.handle("/api/view.png", {"scene": [str(scene)], "view": [str(j)]})[2])
                 for j in info["context"] + [info["query"]]}
        truth = views[info["query"]]
        rendered.append(mse(render(explorer, scene, info["context"], info["cameras"][info["query"]]), truth))
        mean_context.append(mse(sum(views[j] for j in info["context"]) / len(info["context"]), truth))
    assert np.mean(mean_context) == pytest.approx(recorded(kind)["mse_mean_context"], rel=1e-4)
    assert better_than_mean_context(kind, np.mean(rendered), np.mean(mean_context))


def test_the_explorer_walks_the_rooms_checkpoints_ring(test_scenes):
    explorer = explorer_on("rooms", test_scenes)
    info = explorer.scene_info(0)
    # the ring
    assert all(abs(c["pitch"]) < 1e-3 and abs(c["distance"] - 3.0) < 1e-3 for c in info["cameras"])
    first, second = info["cameras"][0], info["cameras"][1]
    between = dict(first, yaw=(first["yaw"] + second["yaw"]) / 2)
    images = [render(explorer, 0, info["context"], camera) for camera in (first, between, second)]
    assert all(image.std() > 0.05 for image in images)                     # a room, not a blank
    assert mse(images[1], images[0]) > 1e-4 and mse(images[1], images[2]) > 1e-4   # the view between them

