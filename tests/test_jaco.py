"""Tests of the built-in Jaco scenes (dataset/jaco.py): the arm's poses and the target, cameras in the
project's convention against MuJoCo's rendering, labels against pixels, determinism across worker
processes, the writer with DeepMind-format TFRecords converted back, and a missing renderer's one
sentence. They need requirements-jaco.txt (the README's test command installs it); without MuJoCo they
skip, except under GQN_REQUIRE_MUJOCO (.ci/run sets it), where they fail."""
import importlib.util
import math
import multiprocessing
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, require_tensorflow
from dataset.labels import JACO_ARM, JACO_BACKGROUND, JACO_FLOOR, JACO_TARGET

if importlib.util.find_spec("mujoco") is None and not os.environ.get("GQN_REQUIRE_MUJOCO"):
    pytest.skip("MuJoCo is not installed (pip install -r requirements-jaco.txt)", allow_module_level=True)

from dataset import jaco  # noqa: E402
from dataset.builtin import camera_basis  # noqa: E402
from dataset.jpeg import decode_jpeg  # noqa: E402


def in_fresh_process(function, *args):
    """function(*args) in a spawned process: MuJoCo's GL (Mesa's LLVM) and TensorFlow, which the suite
    imports, crash each other in one process."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def _poses(scenes):
    w = jaco.world()
    out = []
    for index in range(scenes):
        qpos, centre, colour, cameras = jaco.pose_scene(w, 0, "train", index)
        out.append((qpos, centre, colour, w.touching()))
    return w.low, w.high, out


def test_poses_keep_the_joints_in_range_the_parts_apart_and_the_target_within_reach():
    low, high, poses = in_fresh_process(_poses, 12)
    for qpos, centre, colour, touching in poses:
        assert qpos.shape == (9,)                                         # 6 arm joints, 3 fingers
        assert np.all(qpos >= low) and np.all(qpos <= high)
        assert not touching                                               # nothing touches, nothing sinks
        reach = math.hypot(centre[0], centre[1])
        assert jaco.TARGET_REACH[0] <= reach <= jaco.TARGET_REACH[1]
        assert jaco.TARGET_HEIGHT[0] <= centre[2] <= jaco.TARGET_HEIGHT[1]
        assert colour.max() - colour.min() > 0.3                          # a saturated colour
    assert np.ptp(np.array([p[0] for p in poses]), axis=0).min() > 0.1   # every joint moves between scenes


def project(point, camera, size=jaco.IMAGE_SIZE, fov=jaco.FOV_DEG):
    """The pixel (row, column) where the raw camera sees `point`, or None behind it."""
    forward, right, up = camera_basis(camera[3], camera[4])
    d = np.asarray(point) - camera[:3]
    depth = d @ forward
    if depth <= 0:
        return None
    t = math.tan(math.radians(fov) / 2)
    u, v = (d @ right) / (depth * t), (d @ up) / (depth * t)
    return int((1 - v) / 2 * size), int((u + 1) / 2 * size)


def _views_with_labels(scenes):
    w = jaco.world()
    out = []
    for index in range(scenes):
        _, centre, colour, cameras = jaco.pose_scene(w, 0, "test", index)
        out.append((centre, colour, cameras, np.stack([w.render(c, labels=True)[1] for c in cameras])))
    return out


def test_cameras_look_at_the_arm_and_mujoco_draws_the_target_where_the_convention_puts_it():
    from dataset.viewpoints import looks_at_one_point
    seen, hits = 0, 0
    for centre, _, cameras, labels in in_fresh_process(_views_with_labels, 6):
        assert looks_at_one_point(cameras)                                # the explorer orbits the arm
        distance = np.linalg.norm(cameras[:, :3] - np.asarray(jaco.LOOK_AT), axis=1)
        low, high = jaco.CAMERA_DISTANCE
        assert np.all((distance > low - 1e-6) & (distance < high + 1e-6))
        assert np.all((cameras[:, 4] >= jaco.CAMERA_PITCH[0]) & (cameras[:, 4] <= jaco.CAMERA_PITCH[1]))
        for camera, label in zip(cameras, labels):
            pixel = project(centre, camera)
            if pixel is None or not all(2 <= p < jaco.IMAGE_SIZE - 2 for p in pixel):
                continue
            seen += 1
            window = label[pixel[0] - 1:pixel[0] + 2, pixel[1] - 1:pixel[1] + 2]
            hits += (window == JACO_TARGET).any() or (window == JACO_ARM).any()  # the arm may hide it
    assert seen > 20 and hits >= 0.95 * seen


def _scene_and_colour(index):
    _, _, colour, _ = jaco.pose_scene(jaco.world(), 0, "test", index)
    return jaco.render_scenes(0, "test", index, index + 1, labels=True)[0], colour


def test_labels_name_the_pixels_the_frames_show():
    (frames, cameras, labels), colour = in_fresh_process(_scene_and_colour, 1)
    assert len(frames) == jaco.VIEWS and cameras.shape == (jaco.VIEWS, 5)
    assert labels.shape == (jaco.VIEWS, 64, 64)
    images = np.stack([decode_jpeg(f) for f in frames]).astype(np.float32) / 255
    assert images.shape == (jaco.VIEWS, 64, 64, 3)
    assert set(np.unique(labels)) == {JACO_BACKGROUND, JACO_FLOOR, JACO_ARM, JACO_TARGET}
    mean = {k: images[labels == k].mean(axis=0) for k in (JACO_BACKGROUND, JACO_FLOOR, JACO_ARM, JACO_TARGET)}
    assert mean[JACO_ARM].mean() < 0.35 < mean[JACO_FLOOR].mean()        # the dark arm on the pale floor
    assert mean[JACO_BACKGROUND][2] > mean[JACO_BACKGROUND][0]           # the blue sky behind
    # the target's pixels in the target's colour (shaded: compare the hue, not the brightness)
    target = mean[JACO_TARGET] / np.linalg.norm(mean[JACO_TARGET])
    assert target @ (colour / np.linalg.norm(colour)) > 0.95



def _scenes_with_labels(scenes):
    return [jaco.render_scenes(0, "test", index, index + 1, labels=True)[0] for index in range(scenes)]


def test_geometric_jaco_knows_the_floor_and_sky_and_renders_a_view_it_was_shown():
    """geometric.GeometricJaco's backdrop is MuJoCo's: every pixel labelled floor or background leaves the
    scene there by floor_exit; and with the query camera among the context cameras its untrained rendering
    shows that view: the floor and sky read back, the arm carved where it stands."""
    import torch
    from dataset.viewpoints import raw_to_viewpoint
    from geometric import GeometricJaco, floor_exit, pixel_rays
    agree = total = 0
    for frames, cameras, labels in in_fresh_process(_scenes_with_labels, 3):
        x = torch.from_numpy(np.stack([decode_jpeg(f) for f in frames])).permute(0, 3, 1, 2).float() / 255
        v = torch.from_numpy(raw_to_viewpoint(cameras)).float()
        _, surface = floor_exit(*pixel_rays(v, jaco.IMAGE_SIZE))
        expect = np.where(surface.view(labels.shape).numpy() == 0, JACO_FLOOR, JACO_BACKGROUND)
        backdrop = (labels == JACO_FLOOR) | (labels == JACO_BACKGROUND)
        agree += (expect == labels)[backdrop].sum()
        total += backdrop.sum()
        with torch.no_grad():
            image = GeometricJaco.rendering(GeometricJaco(r_dim=96)(x[None, [0, 4, 8]], v[None, [0, 4, 8]],
                                                                     v[None, 4]))[0]
        error = (image - x[4]).abs().mean(0).numpy()
        assert error[backdrop[4]].mean() < 0.03
        assert error[labels[4] == JACO_ARM].mean() < 0.15
    assert agree / total > 0.99


def _alone_and_others():
    return [jaco.render_scenes(*args)[0] for args in ((0, "train", 3, 4), (0, "train", 3, 4),
                                                      (1, "train", 3, 4), (0, "test", 3, 4))]


def test_the_same_scene_for_the_same_seed_in_any_number_of_processes():
    alone, again, other_seed, other_split = in_fresh_process(_alone_and_others)
    assert again[0] == alone[0] and other_seed[0] != alone[0] and other_split[0] != alone[0]
    n = jaco.SCENES_PER_TASK + 2
    one = list(jaco.iter_scenes(0, "train", n, workers=1))
    two = list(jaco.iter_scenes(0, "train", n, workers=2))
    assert [s[0] for s in one] == [s[0] for s in two] and one[3][0] == alone[0]
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(one, two))


def test_cli_writes_shards_labels_and_tfrecords_that_convert_back(tmp_path):
    import gqn_dataset
    from dataset import convert2torch
    from gqn_dataset import GQNDataset, open_labels
    out = tmp_path / "jaco"
    jaco.main(["--out", str(out), "--train_scenes", "3", "--test_scenes", "2", "--seed", "4",
               "--workers", "1", "--tfrecord", "--files_per_split", "2", "--no_progress"])
    expected = list(jaco.iter_scenes(4, "test", 2, labels=True))
    labels = open_labels(out / "test")
    assert open_labels(out / "train") is None and labels.scheme.name == "jaco"
    np.testing.assert_array_equal(labels.scene(1), expected[1][2])
    images, viewpoints = GQNDataset(str(out / "test"))[1]
    assert tuple(images.shape) == (jaco.VIEWS, 3, 64, 64)
    # DeepMind's format at the real frame size, converted as DeepMind's jaco files are
    require_tensorflow()
    convert2torch.main(["jaco", "--root", str(out / "tfrecord"), "--out", str(tmp_path / "converted"),
                        "--workers", "1", "--no_progress"])
    converted = GQNDataset(str(tmp_path / "converted" / "test"))
    assert len(converted) == 2 and len(GQNDataset(str(tmp_path / "converted" / "train"))) == 3
    again, again_viewpoints = converted[1]
    assert np.array_equal(again.numpy(), images.numpy())
    np.testing.assert_allclose(again_viewpoints.numpy(), viewpoints.numpy(), atol=1e-5)
    assert gqn_dataset.SceneViews(str(tmp_path / "converted" / "test")).num_views == jaco.VIEWS


def run_cli(tmp_path, prelude="", env=None):
    """dataset/jaco.py run as a user would, after `prelude` (Python that hides a package); -> result."""
    script = os.path.join(ROOT, "dataset", "jaco.py")
    argv = ["--out", str(tmp_path / "out"), "--train_scenes", "1", "--test_scenes", "0", "--no_progress"]
    command = [sys.executable, script, *argv]
    if prelude:     # the check that fails runs before any worker starts, in this process
        command = [sys.executable, "-c", f"import sys, runpy; {prelude}; sys.argv = {[script, *argv]!r}; "
                                         f"runpy.run_path({script!r}, run_name='__main__')"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **(env or {})))


@pytest.mark.parametrize("prelude, env, message", [
    ("sys.modules['mujoco'] = None", None,
     "error: the jaco scenes are rendered by MuJoCo, which is not installed; run "
     "`pip install -r requirements-jaco.txt`."),
    ("sys.modules['dm_control'] = None", None,
     "error: the jaco scenes need the Jaco arm's model from dm-control, which is not installed; run "
     "`pip install -r requirements-jaco.txt`."),
    ("", "no_egl", "apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri)."),
])
def test_a_missing_renderer_ends_in_one_sentence_naming_the_install(tmp_path, prelude, env, message):
    if env == "no_egl":          # a libEGL that does not load, found before the system's
        fake = tmp_path / "lib"
        fake.mkdir()
        for name in ("libEGL.so.1", "libEGL.so"):
            (fake / name).write_text("not a library")
        env = {"LD_LIBRARY_PATH": str(fake), "MUJOCO_GL": "egl"}
    result = run_cli(tmp_path, prelude, env)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(message), result.stderr
    assert not (tmp_path / "out" / "train").exists()                     # nothing that looks whole


def test_the_jaco_geometric_preset_renders_trains_and_scores_the_arm(tmp_path):
    """`--preset jaco_geometric` (shortened): renders the built-in jaco scenes, trains the geometric_jaco
    model with the render gate and scores the held-out scenes' arm and target."""
    from conftest import short_preset_run
    state, final = short_preset_run("jaco_geometric", tmp_path)
    assert state["config"]["representation"] == "geometric_jaco"
    assert state["model"]["phi.agree_level"] != 0.3              # its photo-consistency test learnt
    assert {"arm_iou_generation", "target_iou_generation", "floor_error_generation"} <= set(final)
