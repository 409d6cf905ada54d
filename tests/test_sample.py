"""sample.py: on a tiny checkpoint it writes a grid PNG of the promised layout and an orbit (or, on free
cameras, a walk) GIF of --frames different frames, in the dataset's camera convention, byte for byte the
same for the same seed; user mistakes end in one sentence."""

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

import sample
from model import GQN
from dataset import rooms
from dataset.shepard_metzler import camera_from_position
from dataset.viewpoints import raw_to_viewpoint

TILE = 64 + 2                                  # a 64x64 view and images.make_grid's 2-pixel gap


def run(ckpt, test_dir, out, *extra):
    return sample.main(["--checkpoint", ckpt, "--data_dir", test_dir, "--out", str(out), *extra])


def gif_frames(path):
    with Image.open(path) as im:
        return [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]


def test_writes_a_grid_of_the_promised_layout_and_an_orbit_of_frames_frames(
        tiny_checkpoint, tiny_data, tmp_path, capsys):
    grid, orbit = run(tiny_checkpoint, tiny_data[1], tmp_path, "--scenes", "0", "5", "7", "--context", "2",
                      "--samples", "3", "--frames", "5")
    printed = capsys.readouterr().out
    assert f"wrote {grid}" in printed and f"wrote {orbit}" in printed
    with Image.open(grid) as im:
        # 3 scenes; 2 context + truth + reconstruction + 3 samples
        assert im.format == "PNG" and im.size == ((2 + 2 + 3) * TILE + 2, 3 * TILE + 2)
    with Image.open(orbit) as im:
        assert im.format == "GIF" and im.n_frames == 5 and im.size == ((2 + 1) * TILE + 2, 3 * TILE + 2)
    frames = gif_frames(orbit)
    # the orbit view, right of the 2 context views
    orbit_column = slice(2 * TILE + 2, 3 * TILE)
    views = [f[:, orbit_column] for f in frames]
    assert all(not np.array_equal(views[i], views[j]) for i in range(5) for j in range(i))
    context = [f[:, :2 * TILE] for f in frames]                   # the context views stand still
    assert all(np.array_equal(context[0], c) for c in context)


def test_the_grid_shows_the_context_and_the_truth(tiny_checkpoint, tiny_data, tmp_path):
    grid, _ = run(tiny_checkpoint, tiny_data[1], tmp_path, "--scenes", "4", "--context", "3", "--samples",
                  "1", "--frames", "2", "--seed", "2")
    # the views evaluate.py scores for (seed 2, scene 4), by the documented rule
    # (gqn_dataset.FixedContextSampler): permutation of the 6 views from numpy's default_rng([seed, 2 (the
    # evaluation stream), scene]), the first 3 the context, the 4th the query
    order = np.random.default_rng([2, 2, 4]).permutation(6)
    context, query = [int(i) for i in order[:3]], int(order[3])
    frames, _ = sample.gqn_dataset.SceneViews(tiny_data[1])[(4, tuple(range(6)))]   # all 6 views, by index
    frames = frames.permute(0, 2, 3, 1).numpy().astype(int)                         # (6, 64, 64, 3)
    with Image.open(grid) as im:
        picture = np.asarray(im.convert("RGB")).astype(int)
    shown = []                                 # which of the scene's 6 views each of the 4 tiles shows
    for column in range(4):
        tile = picture[2:66, 2 + column * TILE:2 + column * TILE + 64]
        shown.append([i for i in range(6) if np.abs(tile - frames[i]).max() <= 1])
    assert shown == [[i] for i in context + [query]]   # those exact frames, in that order, and no other view
    assert shown[3][0] not in [s[0] for s in shown[:3]]  # the truth is a view the model was not given


def test_same_seed_same_bytes_and_another_seed_other_bytes(tiny_checkpoint, tiny_data, tmp_path):
    flags = ["--random", "2", "--frames", "3", "--samples", "2"]
    a = run(tiny_checkpoint, tiny_data[1], tmp_path / "a", *flags)
    b = run(tiny_checkpoint, tiny_data[1], tmp_path / "b", *flags)
    c = run(tiny_checkpoint, tiny_data[1], tmp_path / "c", *flags, "--seed", "1")
    for pa, pb, pc in zip(a, b, c):
        with open(pa, "rb") as fa, open(pb, "rb") as fb, open(pc, "rb") as fc:
            first = fa.read()
            assert first == fb.read() and first != fc.read()


def test_a_second_run_keeps_the_first_runs_files_unless_told_to_overwrite(
        tiny_checkpoint, tiny_data, tmp_path):
    """Another --scenes (or any other setting) wrote under the same name and replaced the earlier images,
    the README's own in assets/ among them."""
    flags = ["--frames", "2", "--samples", "1"]
    first = run(tiny_checkpoint, tiny_data[1], tmp_path, *flags, "--scenes", "0")
    kept = [open(p, "rb").read() for p in first]
    second = run(tiny_checkpoint, tiny_data[1], tmp_path, *flags, "--scenes", "1")
    assert [str(p).replace("-2-", "-") for p in second] == [str(p) for p in first]
    assert [open(p, "rb").read() for p in first] == kept
    third = run(tiny_checkpoint, tiny_data[1], tmp_path, *flags, "--scenes", "1", "--overwrite")
    assert third == first and [open(p, "rb").read() for p in first] == [open(p, "rb").read() for p in second]


def test_orbit_circles_in_the_datasets_camera_convention():
    v = sample.orbit_viewpoints(8, math.radians(-25), 3.0).double().numpy()    # (8, 7)
    position = v[:, :3]
    assert np.allclose(np.linalg.norm(position, axis=1), 3.0)
    assert np.allclose(position[:, 2], 3.0 * math.sin(math.radians(25)))      # pitch -25: 25 degrees above
    # the dataset's (x, y, z, yaw, pitch)
    raw = camera_from_position(position)
    yaw, pitch = np.arctan2(v[:, 4], v[:, 3]) % (2 * np.pi), np.arctan2(v[:, 6], v[:, 5])
    assert np.allclose(np.cos(raw[:, 3] - yaw), 1) and np.allclose(raw[:, 4], pitch, atol=1e-6)
    assert np.allclose(yaw, 2 * np.pi * np.arange(8) / 8, atol=1e-6)          # once around, evenly


def test_the_orbit_of_ring_cameras_walks_the_ring_through_every_view():
    azimuths = 2 * np.pi * np.arange(10) / 10
    ring = rooms.ring_cameras(azimuths)                                       # rooms_ring_camera's cameras
    target, pitch, distance = sample.scene_orbit(ring)
    np.testing.assert_allclose(target, [0, 0, rooms.TARGET_HEIGHT], atol=1e-9)
    assert pitch == pytest.approx(ring[0, 4]) and distance == pytest.approx(rooms.RING_RADIUS)
    orbit = sample.orbit_viewpoints(10, pitch, distance, target).double().numpy()   # (10, 7)
    views = raw_to_viewpoint(ring)
    # every orbit frame is a view's camera
    for frame in orbit:
        assert np.abs(views - frame).max(axis=1).min() < 1e-5


def test_the_orbit_of_cameras_around_an_object_looks_down_at_it_by_default():
    rng = np.random.default_rng(0)
    position = rng.normal(size=(15, 3))
    position = 3.3 * position / np.linalg.norm(position, axis=1, keepdims=True)
    target, pitch, distance = sample.scene_orbit(camera_from_position(position))
    np.testing.assert_allclose(target, 0, atol=1e-9)
    assert pitch == pytest.approx(-math.radians(sample.DEFAULT_ELEVATION)) and distance == pytest.approx(3.3)
    assert sample.scene_orbit(camera_from_position(position), pitch_deg=10, distance=2)[1:] == \
        (pytest.approx(math.radians(10)), 2)


def test_every_orbit_frame_uses_the_same_noise():
    torch.manual_seed(0)
    model = GQN(L=2, h_dim=8, r_dim=16).eval()
    x, v = torch.rand(2, 1, 3, 64, 64), torch.rand(2, 1, 7)
    same_camera = sample.orbit_viewpoints(1, -0.4, 3.0).expand(2, 3, 7)        # 3 frames, one camera
    frames = sample.render_orbit(model, x, v, same_camera, seed=0)
    assert torch.equal(frames[0], frames[1]) and torch.equal(frames[0], frames[2])
    # the first sample column's noise
    torch.manual_seed(sample.noise_seed(0, 1))
    assert torch.equal(frames[0], model.generate(x, v, same_camera[:, 0]))


@pytest.mark.parametrize("extra, says", [
    (["--scenes", "0", "8"], "scene 8 does not exist"),                     # tiny test split: 8 scenes
    (["--scenes", "-1"], "scene -1 does not exist"),
    (["--random", "9"], "--random 9 asks for more scenes than the 8"),
    (["--context", "6"], "--context 6 is out of range"),                    # tiny scenes: 6 views
])
def test_bad_values_end_in_one_sentence(tiny_checkpoint, tiny_data, tmp_path, extra, says):
    with pytest.raises(SystemExit) as e:
        run(tiny_checkpoint, tiny_data[1], tmp_path, *extra)
    message = str(e.value.code)
    assert message.startswith("error: ") and says in message and "\n" not in message
    assert not list(tmp_path.iterdir())                                     # nothing written


@pytest.mark.parametrize("extra, says", [
    (["--context", "0"], "argument --eval_context/--context: must be a positive whole number"),
    (["--frames", "0"], "argument --frames: must be a positive whole number"),
    (["--pitch", "90"], "must lie strictly between -90 and 90"),
    (["--distance", "0"], "argument --distance: must be a positive number"),
])
def test_bad_flags_are_usage_errors(tiny_data, extra, says, capsys):
    with pytest.raises(SystemExit) as e:
        sample.parse_args(["--checkpoint", "x.pt", *extra])
    assert e.value.code == 2 and says in capsys.readouterr().err


def test_elevation_and_pitch_are_one_angle_of_opposite_signs():
    assert sample.parse_args(["--checkpoint", "x.pt"]).pitch_deg is None      # each scene's own (scene_orbit)
    assert sample.parse_args(["--checkpoint", "x.pt", "--elevation", "40"]).pitch_deg == -40
    assert sample.parse_args(["--checkpoint", "x.pt", "--pitch", "10"]).pitch_deg == 10


def test_missing_checkpoint_is_one_sentence(tmp_path):
    with pytest.raises(SystemExit) as e:
        sample.main(["--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path)])
    assert str(e.value.code) == f"error: no checkpoint file at {tmp_path / 'nope.pt'}; check the path"


def test_on_free_cameras_the_gif_walks_through_the_scene_and_ring_data_keeps_its_orbit(
        tiny_checkpoint, tiny_data, tmp_path, capsys):
    from dataset import mazes
    from dataset.shards import write_split
    from dataset.viewpoints import viewpoint_to_raw
    split = tmp_path / "mazes" / "test"
    write_split(split, mazes.render_scenes(0, "test", 0, 2, views=12))
    grid, walk = run(tiny_checkpoint, str(split), tmp_path / "out", "--scenes", "1", "--frames", "6",
                     "--samples", "1")
    assert walk.endswith("-walk.gif") and "a walk through 8 of the scene's cameras" in capsys.readouterr().out
    assert len(gif_frames(walk)) == 6
    # the path: from the query view's camera, at eye height, through the maze rather than around a centre
    _, _, _, _, cameras, queries = sample.load_scenes(sample.gqn_dataset.SceneViews(str(split)), [1], 3, 0)
    path, kind, _ = sample.scene_path(cameras[0], queries[0], 24)
    raw = viewpoint_to_raw(path.double().numpy())
    assert kind == "walk"
    np.testing.assert_allclose(raw[0], cameras[0][queries[0]], atol=1e-5)
    np.testing.assert_allclose(raw[:, 2], mazes.EYE_HEIGHT, atol=1e-6)
    assert sample.scene_path(cameras[0], queries[0], 24, path="orbit")[1] == "orbit"
    # Shepard-Metzler-like cameras (tiny_data) still orbit
    _, orbit = run(tiny_checkpoint, tiny_data[1], tmp_path / "sm", "--scenes", "0", "--frames", "2",
                   "--samples", "1")
    assert orbit.endswith("-orbit.gif")
