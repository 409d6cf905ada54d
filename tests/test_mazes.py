"""Tests of the built-in mazes (dataset/mazes.py): layouts, cameras, the ray caster against the camera model,
labels, determinism, the writer, DeepMind-format TFRecords at 84 pixels converted and trained on, and bad
input."""
import math
import subprocess
import sys
from collections import deque

import numpy as np
import pytest

from conftest import ROOT, require_tensorflow
from dataset import mazes
from dataset.labels import FLOOR, SKY, WALL

FEW_VIEWS = 12          # views per scene where a test does not need DeepMind's 300


def reachable(maze):
    """The number of cells reachable from cell (0, 0) through open boundaries."""
    g = maze.west_east.shape[0]
    seen, todo = {(0, 0)}, deque([(0, 0)])
    while todo:
        r, c = todo.popleft()
        steps = [(r, c + 1, not maze.west_east[r, c + 1]), (r, c - 1, not maze.west_east[r, c]),
                 (r + 1, c, not maze.south_north[r + 1, c]), (r - 1, c, not maze.south_north[r, c])]
        for nr, nc, open_ in steps:
            if open_ and (nr, nc) not in seen:
                seen.add((nr, nc))
                todo.append((nr, nc))
    return len(seen)


def boxed_maze(cameras):
    """A maze whose every cell is walled in, seen from the given cameras."""
    maze = mazes.random_maze(0, "train", 0, 1)
    maze.west_east[:] = True
    maze.south_north[:] = True
    maze.cameras = np.asarray(cameras, dtype=np.float64)
    return maze


def test_layouts_are_closed_connected_mazes_with_one_or_two_open_rooms():
    room_counts = set()
    for index in range(30):
        maze = mazes.random_maze(0, "train", index, 1)
        g = mazes.GRID
        assert maze.west_east[:, [0, g]].all() and maze.south_north[[0, g], :].all()    # the outer wall
        assert reachable(maze) == g * g                                                  # no cell shut off
        room_counts.add(len(maze.rooms))
        for r, c, h, w in maze.rooms:
            assert not maze.west_east[r:r + h, c + 1:c + w].any()
            assert not maze.south_north[r + 1:r + h, c:c + w].any()
        # corridors, not an open field: most inner boundaries are walls
        inner = maze.west_east[:, 1:g].sum() + maze.south_north[1:g, :].sum()
        assert inner > 0.25 * 2 * g * (g - 1)
    assert room_counts == {1, 2}


def test_cameras_stand_in_free_space_at_eye_height_looking_any_way():
    cams = np.concatenate([mazes.random_maze(0, "train", i).cameras for i in range(3)])
    assert cams.shape == (900, 5)
    half = mazes.GRID * mazes.CELL / 2
    within = np.mod(cams[:, :2] + half, mazes.CELL)
    margin = mazes.CAMERA_MARGIN - 1e-9
    assert (within >= margin).all() and (within <= mazes.CELL - margin).all()
    assert (np.abs(cams[:, :2]) < half).all() and np.allclose(cams[:, 2], mazes.EYE_HEIGHT)
    assert cams[:, 3].min() < 0.2 and 2 * math.pi - 0.2 < cams[:, 3].max() < 2 * math.pi
    assert (cams[:, 4] >= mazes.PITCH[0]).all() and (cams[:, 4] <= mazes.PITCH[1]).all()


def test_a_wall_ahead_projects_to_the_rows_the_camera_model_says():
    # a camera in the middle of a walled-in cell facing +x (yaw 0), level: the wall ahead is CELL / 2 away;
    # its foot is seen at tan = EYE_HEIGHT / (CELL / 2) below the centre, its top above the frame
    x = -mazes.GRID * mazes.CELL / 2 + 3.5 * mazes.CELL
    maze = boxed_maze([[x, x, mazes.EYE_HEIGHT, 0.0, 0.0], [x, x, mazes.EYE_HEIGHT, 0.0, 0.3]])
    images, labels = mazes.render_maze(maze)
    size = mazes.IMAGE_SIZE
    tan_half = math.tan(math.radians(mazes.FOV_DEG) / 2)
    foot = (1 + mazes.EYE_HEIGHT / (mazes.CELL / 2) / tan_half) * size / 2       # continuous row of the foot
    column = labels[0, :, size // 2]
    assert (column[:math.floor(foot) - 1] == WALL).all() and (column[math.ceil(foot) + 1:] == FLOOR).all()
    # looking up 0.3 rad, the wall's top edge comes into view, with the sky above it
    up = labels[1, :, size // 2]
    rows_sky = np.flatnonzero(up == SKY)
    top = math.atan2(mazes.WALL_HEIGHT - mazes.EYE_HEIGHT, mazes.CELL / 2) - 0.3
    expected = (1 - math.tan(top) / tan_half) * size / 2
    assert len(rows_sky) and rows_sky[0] == 0 and abs(rows_sky[-1] + 1 - expected) < 1.5
    # the corners of the cell are darker than the wall's middle (its ambient occlusion)
    wall = images[0][labels[0] == WALL].astype(float).mean(axis=0)
    assert images[0, size // 3, 2].astype(float).sum() < wall.sum()


def test_labels_agree_with_the_pixels():
    for index in range(3):
        maze = mazes.random_maze(0, "test", index, FEW_VIEWS)
        images, labels = mazes.render_maze(maze)
        x = images.astype(np.float64) / 255
        assert set(np.unique(labels)) == {SKY, WALL, FLOOR}
        sky = x[labels == SKY]
        assert (sky[:, 2] > sky[:, 0]).mean() > 0.95                            # the sky is blue or white
        light, dark, trim = (np.asarray(c) for c in mazes.WALL_PALETTES[maze.wall[1]])
        walls = x[labels == WALL]
        # the wall's pixels are its palette's colours, shaded: their hue is the palette's
        ratio = walls.mean(0) / walls.mean(0).sum()
        palette = (light + dark + trim) / (light + dark + trim).sum()
        assert np.abs(ratio - palette).max() < 0.04
        floor = np.asarray(mazes.FLOOR_PALETTES[maze.floor[1]]).mean(0)
        seen = x[labels == FLOOR].mean(0)
        assert np.abs(seen / seen.sum() - floor / floor.sum()).max() < 0.04
        # the sky is above the horizon, the floor below it (pitch within +-0.2 rad keeps them apart)
        rows = np.arange(mazes.IMAGE_SIZE)[None, :, None]
        assert (np.where(labels == SKY, rows, -1).max(axis=(1, 2)) < np.where(labels == FLOOR, rows, 999)
                .min(axis=(1, 2))).all()


def test_a_scene_has_the_same_bytes_alone_or_with_others_and_with_1_or_2_workers():
    alone = mazes.render_scenes(0, "train", 3, 4, FEW_VIEWS)[0]
    batch = mazes.render_scenes(0, "train", 2, 5, FEW_VIEWS)
    assert alone[0] == batch[1][0] and np.array_equal(alone[1], batch[1][1])
    assert mazes.render_scenes(1, "train", 3, 4, FEW_VIEWS)[0][0] != alone[0]
    assert mazes.render_scenes(0, "test", 3, 4, FEW_VIEWS)[0][0] != alone[0]
    n = 2 * mazes.SCENES_PER_TASK + 1
    one = list(mazes.iter_scenes(0, "train", n, FEW_VIEWS, workers=1))
    two = list(mazes.iter_scenes(0, "train", n, FEW_VIEWS, workers=2))
    assert [s[0] for s in one] == [s[0] for s in two] and one[3][0] == alone[0]


def test_cli_writes_84_pixel_shards_64_pixel_labels_and_tfrecords(tmp_path):
    from dataset import tfrecord as tfr
    from dataset.jpeg import decode_jpeg
    from gqn_dataset import GQNDataset, SceneViews, open_labels
    out = tmp_path / "mazes"
    mazes.main(["--out", str(out), "--train_scenes", "2", "--test_scenes", "3", "--seed", "2",
                "--workers", "1",
                "--scenes_per_shard", "2", "--tfrecord", "--files_per_split", "2", "--no_progress"])
    assert len(SceneViews(str(out / "train"))) == 2 and SceneViews(str(out / "test")).num_views == 300
    expected = mazes.render_scenes(2, "test", 0, 3, labels=True)
    assert decode_jpeg(expected[0][0][0]).shape == (84, 84, 3)
    labels = open_labels(out / "test")
    assert len(labels) == 3 and open_labels(out / "train") is None
    got = labels.view(2, 299)
    assert got.shape == (64, 64)
    np.testing.assert_array_equal(got, expected[2][2][299])
    images, viewpoints = GQNDataset(str(out / "test"))[1]                   # brought to 64x64 on loading
    assert tuple(images.shape) == (300, 3, 64, 64)
    np.testing.assert_allclose(viewpoints[:, :3].numpy(), expected[1][1][:, :3], atol=1e-6)
    records = [r for name in ("1-of-2.tfrecord", "2-of-2.tfrecord")
               for r in tfr.iter_tfrecord(out / "tfrecord" / "mazes" / "test" / name)]
    frames, cameras = tfr.decode_gqn_example(records[2])
    assert len(records) == 3 and frames == expected[2][0] and np.array_equal(cameras, expected[2][1])


@pytest.mark.parametrize("args, message", [
    (["--test_scenes", "-1"], "--test_scenes is -1; pass 0 or more scenes."),
    (["--workers", "0"], "--workers is 0; pass 1 or more processes."),
    ([], "is not empty; pass --overwrite"),
])
def test_cli_bad_input_ends_in_one_sentence(tmp_path, args, message):
    out = tmp_path / "mazes"
    (out / "train").mkdir(parents=True)
    (out / "train" / "shard-00000.gqn").write_bytes(b"")       # an earlier run's output
    result = subprocess.run([sys.executable, "dataset/mazes.py", "--out", str(out), "--train_scenes", "1",
                             "--test_scenes", "1", "--no_progress"] + args,
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and message in result.stderr
    assert (out / "train" / "shard-00000.gqn").exists()              # nothing already written is lost


def test_an_unwritable_output_folder_and_zero_scenes_end_in_one_sentence(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = subprocess.run([sys.executable, "dataset/mazes.py", "--out", str(blocker / "mazes"),
                             "--train_scenes", "1", "--test_scenes", "1", "--no_progress"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert "cannot create the output folder" in result.stderr and "pass a writable --out" in result.stderr
    with pytest.raises(mazes.RenderError, match="at least one train and one test scene"):
        mazes.ensure_builtin_mazes(str(tmp_path / "cache"), 0, 1, progress=False)


def test_mazes_tfrecords_convert_and_train_one_step_and_another_datasets_name_is_refused(tmp_path):
    """mazes-shaped TFRecords (300 views, 84x84) -> dataset/convert2torch.py -> one training step; the same
    files converted as another dataset (10 views) end in one sentence."""
    require_tensorflow()
    out = tmp_path / "mazes"
    mazes.main(["--out", str(out), "--train_scenes", "2", "--test_scenes", "2", "--workers", "1",
                "--tfrecord",
                "--files_per_split", "1", "--no_progress"])
    converted = tmp_path / "converted"
    subprocess.run([sys.executable, "dataset/convert2torch.py", "mazes", "--root", str(out / "tfrecord"),
                    "--out", str(converted), "--workers", "1", "--no_progress"],
                   cwd=ROOT, check=True, capture_output=True, timeout=600)
    from gqn_dataset import GQNDataset
    images, viewpoints = GQNDataset(str(converted / "test"))[0]
    assert tuple(images.shape) == (300, 3, 64, 64) and tuple(viewpoints.shape) == (300, 7)
    result = subprocess.run([sys.executable, "train.py", "--dataset", "Labyrinth", "--train_data_dir",
                             str(converted / "train"), "--test_data_dir", str(converted / "test"),
                             "--gradient_steps", "1", "--batch_size", "2", "--layers", "1", "--h_dim", "8",
                             "--r_dim", "16", "--representation", "tower", "--root_log_dir",
                             str(tmp_path / "runs"), "--log_dir", "mazes", "--seed", "0", "--workers", "0",
                             "--eval_scenes", "2"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert list((tmp_path / "runs" / "mazes").rglob("*.pt")), "no checkpoint written"

    (out / "tfrecord" / "mazes").rename(out / "tfrecord" / "rooms_ring_camera")
    wrong = subprocess.run([sys.executable, "dataset/convert2torch.py", "rooms_ring_camera", "--root",
                            str(out / "tfrecord"), "--out", str(tmp_path / "wrong"), "--workers", "1",
                            "--no_progress"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert wrong.returncode != 0 and "Traceback" not in wrong.stderr
    assert wrong.stderr.count("\n") == 1
    assert "has 300 frames, but rooms_ring_camera has 10 views" in wrong.stderr
