"""Tests of the built-in rooms (dataset/rooms.py), their labels (dataset/labels.py, gqn_dataset.open_labels)
and of real rooms_ring_camera-shaped TFRecords converted and trained on."""
import colorsys
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, require_tensorflow
from dataset import rooms
from dataset.builtin import forward_from_yaw_pitch
from dataset.errors import DatasetError
from dataset.jpeg import decode_jpeg
from dataset.labels import FIRST_OBJECT, FLOOR, SKY, WALL


def empty_room(azimuths, index=0):
    """Scene `index` of seed 0 without its objects, seen from ring cameras at the given azimuths."""
    room = rooms.random_room(0, "train", index)
    room.objects = []
    room.cameras = rooms.ring_cameras(np.asarray(azimuths, dtype=np.float64))
    return room


def interior(mask):
    """The pixels of a (H, W) mask whose 4 neighbours are in it too."""
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    inner[[0, -1]] = False
    inner[:, [0, -1]] = False
    return inner


def hue(rgb):
    return colorsys.rgb_to_hsv(*np.asarray(rgb, dtype=np.float64))[0]


def hue_distance(a, b):
    d = abs(a - b) % 1.0
    return min(d, 1 - d)


# ----------------------------------------------------------------------------- cameras

def test_ring_cameras_face_the_centre_with_the_real_conventions_yaw_and_pitch():
    azimuths = np.linspace(0, 2 * np.pi, 13)[:-1] + 0.1
    cams = rooms.ring_cameras(azimuths)
    pos = cams[:, :3]
    np.testing.assert_allclose(np.hypot(pos[:, 0], pos[:, 1]), rooms.RING_RADIUS)
    np.testing.assert_allclose(pos[:, 2], rooms.CAMERA_HEIGHT)
    # forward from (yaw, pitch) by the convention's formula points at the room's centre
    towards_centre = np.array([0, 0, rooms.TARGET_HEIGHT]) - pos
    towards_centre /= np.linalg.norm(towards_centre, axis=1, keepdims=True)
    np.testing.assert_allclose(forward_from_yaw_pitch(cams[:, 3], cams[:, 4]), towards_centre, atol=1e-12)
    np.testing.assert_allclose(cams[:, 3], np.mod(np.pi - azimuths, 2 * np.pi), atol=1e-12)
    np.testing.assert_allclose(cams[:, 4],
                               math.atan2(rooms.TARGET_HEIGHT - rooms.CAMERA_HEIGHT, rooms.RING_RADIUS))
    assert np.all((cams[:, 3] >= 0) & (cams[:, 3] < 2 * np.pi))
    cols, rows, depth = rooms.project([[0, 0, rooms.TARGET_HEIGHT]], cams)
    np.testing.assert_allclose(cols, 32, atol=1e-9)
    np.testing.assert_allclose(rows, 32, atol=1e-9)
    np.testing.assert_allclose(depth, rooms.RING_RADIUS, atol=1e-9)
    scene_cams = rooms.random_room(0, "train", 3).cameras     # a scene's views: 10 cameras on the same ring
    assert scene_cams.shape == (rooms.VIEWS, 5)
    np.testing.assert_allclose(np.hypot(scene_cams[:, 0], scene_cams[:, 1]), rooms.RING_RADIUS)


def test_a_wall_corner_projects_to_the_pixel_the_camera_model_says():
    room = empty_room([np.pi / 4 + 0.08])         # on the ring opposite the corner (-3.5, -3.5), facing it
    images, labels = rooms.render_room(room)
    image, label = images[0], labels[0]
    h = rooms.ROOM_HALF
    cols, rows, _ = rooms.project([[-h, -h, rooms.WALL_HEIGHT], [-h, -h, 0]], room.cameras)
    c, top, bottom = int(cols[0, 0]), rows[0, 0], rows[0, 1]
    assert 8 < c < 56 and abs(cols[0, 0] - cols[0, 1]) < 1e-9       # no roll: the corner's edge is upright
    assert 10 < top < bottom < 50
    assert label[int(top) - 1, c] == SKY and label[int(top) + 1, c] == WALL
    assert label[int(bottom) - 1, c] == WALL and label[int(bottom) + 1, c] == FLOOR
    # the corner is also a colour edge: the sky above it is the sky's colour, the two walls meet there
    np.testing.assert_allclose(image[int(top) - 2, c] / 255, rooms.SKY_COLOUR, atol=1.5 / 255)
    left = image[int(top) + 2:int(bottom) - 1, c - 4:c - 1].reshape(-1, 3).mean(0)
    right = image[int(top) + 2:int(bottom) - 1, c + 2:c + 5].reshape(-1, 3).mean(0)
    assert np.abs(left - right).max() > 4          # the two walls face the light differently


# ----------------------------------------------------------------------------- labels and the look

def test_labels_agree_with_the_pixels():
    for index in range(6):
        room = rooms.random_room(0, "test", index)
        images, labels = rooms.render_room(room)
        x = images.astype(np.float64) / 255
        for v in range(len(images)):
            sky = interior(labels[v] == SKY)
            assert sky.any()
            np.testing.assert_allclose(x[v][sky], np.broadcast_to(rooms.SKY_COLOUR, x[v][sky].shape),
                                       atol=1 / 255)
            for k, obj in enumerate(room.objects):
                region = interior(labels[v] == FIRST_OBJECT + k)
                if region.sum() < 12:
                    continue
                seen = np.median([hue(p) for p in x[v][region]])
                assert hue_distance(seen, hue(obj.colour)) < 0.05, (index, v, k, obj.shape)
            walls = interior(labels[v] == WALL)
            wall_hue = hue(np.mean(rooms.WALL_TEXTURES[room.wall], axis=0))
            assert hue_distance(hue(x[v][walls].mean(0)), wall_hue) < 0.05
        objects = {FIRST_OBJECT + k for k in range(len(room.objects))}
        assert set(np.unique(labels)) <= {SKY, WALL, FLOOR} | objects
        assert (labels == FLOOR).any() and (labels == WALL).any()


def test_every_shape_renders_in_view_and_sits_on_the_floor():
    for shape in rooms.SHAPES:
        room = empty_room([0.4, 2.0, 4.0])
        rng = np.random.default_rng(1)
        obj = rooms.RoomObject(shape, 0.3, -0.2, 0.7, 0.45, [1.0, 0.2, 0.2],
                               rooms._shape_dims(shape, 0.45, rng))
        room.objects = [obj]
        _, labels = rooms.render_room(room)
        for v in range(3):
            mask = labels[v] == FIRST_OBJECT
            assert 40 < mask.sum() < 1500, (shape, v, mask.sum())
            rows = np.nonzero(mask.any(axis=1))[0]
            _, floor_row, _ = rooms.project([[obj.x, obj.y, 0]], room.cameras[v:v + 1])
            assert abs(rows.max() + 1 - floor_row[0, 0]) < 4, shape     # its bottom on the floor's row


def test_rooms_statistics_of_a_known_frame():
    frame = np.zeros((64, 64, 3), np.float32)
    frame[:21] = [1.0, 1.0, 1.0]                     # white: unsaturated
    frame[21:43] = [0.0, 0.0, 0.9]                   # blue: saturated
    frame[43:] = [0.06, 0.03, 0.0]                   # black (largest channel < 0.1), saturated
    stats = rooms.rooms_statistics(frame)
    assert stats["band_sky"] == pytest.approx(1.0)
    assert stats["band_wall"] == pytest.approx(0.3)
    assert stats["band_floor"] == pytest.approx(0.03)
    assert stats["saturated"] == pytest.approx((22 + 21) / 64)
    assert stats["black"] == pytest.approx(21 / 64)
    as_uint8 = (frame * 255 + 0.5).astype(np.uint8)[None]
    assert rooms.rooms_statistics(as_uint8)["band_wall"] == pytest.approx(0.3, abs=0.01)
    with pytest.raises(ValueError, match="frames"):
        rooms.rooms_statistics(np.zeros((3, 64, 64)))


def test_built_in_rooms_look_like_the_real_ones():
    # what the real rooms_ring_camera frames measure (REAL_ROOMS_STATISTICS): the decoded JPEG frames of
    # a few dozen built-in rooms stay within 0.05 of each figure
    frames = np.stack([decode_jpeg(f) for scene, _ in rooms.render_scenes(11, "train", 0, 40) for f in scene])
    stats = rooms.rooms_statistics(frames)
    for name, real in rooms.REAL_ROOMS_STATISTICS.items():
        assert abs(stats[name] - real) <= 0.05, (name, stats[name], real)


FREE_KINDS = ("rooms_free_camera_no_object_rotations", "rooms_free_camera_with_object_rotations")


@pytest.mark.parametrize("kind", FREE_KINDS)
def test_free_cameras_see_the_ring_kinds_room_from_anywhere_inside_it(kind):
    heights, pitches = [], []
    for index in range(20):
        ring, free = rooms.random_room(0, "train", index), rooms.random_room(0, "train", index, kind=kind)
        assert (free.wall, free.floor, free.light) == (ring.wall, ring.floor, ring.light)
        assert [(o.shape, o.x, o.y) for o in free.objects] == [(o.shape, o.x, o.y) for o in ring.objects]
        turned = [o.turn if rooms.KINDS[kind].object_turns else 0.0 for o in ring.objects]
        assert [o.turn for o in free.objects] == turned
        cams = free.cameras
        assert cams.shape == (rooms.VIEWS, 5)
        assert (np.abs(cams[:, :2]) <= rooms.ROOM_HALF - rooms.FREE_WALL_MARGIN).all()
        for o in free.objects:
            gap = np.hypot(cams[:, 0] - o.x, cams[:, 1] - o.y)
            assert (gap >= o.dims["reach"] + rooms.FREE_OBJECT_MARGIN).all()
        heights += list(cams[:, 2])
        pitches += list(cams[:, 4])
    # anywhere: not on a ring, any yaw, heights and pitches over their ranges
    assert np.ptp(np.hypot(*np.concatenate([rooms.random_room(0, "train", i, kind=kind).cameras[:, :2]
                                            for i in range(5)]).T)) > 2.5
    assert min(heights) >= rooms.FREE_HEIGHT[0] and max(heights) <= rooms.FREE_HEIGHT[1]
    assert min(pitches) < -0.1 and max(pitches) > 0.15 and max(pitches) <= rooms.FREE_PITCH[1]


@pytest.mark.parametrize("kind", FREE_KINDS)
def test_free_camera_frames_look_like_the_real_ones(kind):
    # the bands' brightness of the real rooms_free_camera frames (REAL_FREE_ROOMS_STATISTICS), within 0.15
    frames = np.stack([decode_jpeg(f) for scene, _ in rooms.render_scenes(11, "train", 0, 30, kind=kind)
                       for f in scene])
    assert frames.shape[1:] == (rooms.KINDS[kind].image_size,) * 2 + (3,)
    stats = rooms.rooms_statistics(frames)
    for name in ("band_sky", "band_wall", "band_floor"):
        assert abs(stats[name] - rooms.REAL_FREE_ROOMS_STATISTICS[name]) <= 0.15, (name, stats[name])
    assert stats["black"] == 0


def test_128_pixel_frames_and_their_64_pixel_labels_agree():
    from dataset.jpeg import resize_frames
    kind = "rooms_free_camera_with_object_rotations"
    for index in range(3):
        frames, _, labels = rooms.render_scenes(0, "test", index, index + 1, labels=True, kind=kind)[0]
        assert labels.shape == (rooms.VIEWS, 64, 64)
        x = resize_frames(np.stack([decode_jpeg(f) for f in frames])).astype(np.float64) / 255   # as loaded
        assert x.shape == (rooms.VIEWS, 64, 64, 3)
        for v in range(rooms.VIEWS):
            sky = interior(labels[v] == SKY)
            if sky.any():
                assert np.abs(x[v][sky] - rooms.SKY_COLOUR).mean() < 0.03     # JPEG's and the resize's error
            for k in range(len(rooms.random_room(0, "test", index, kind=kind).objects)):
                region = interior(labels[v] == FIRST_OBJECT + k)
                if region.sum() >= 12:   # an object's pixels are not the sky's colour
                    assert np.abs(x[v][region].mean(0) - rooms.SKY_COLOUR).sum() > 0.1


# ----------------------------------------------------------------------------- determinism and writing

@pytest.mark.parametrize("kind", ["rooms_ring_camera", "rooms_free_camera_with_object_rotations"])
def test_a_scene_has_the_same_bytes_alone_or_with_others_and_with_1_or_2_workers(kind):
    alone = rooms.render_scenes(0, "train", 5, 6, kind=kind)[0]
    batch = rooms.render_scenes(0, "train", 3, 7, kind=kind)
    assert alone[0] == batch[2][0] and np.array_equal(alone[1], batch[2][1])
    assert rooms.render_scenes(1, "train", 5, 6, kind=kind)[0][0] != alone[0]
    assert rooms.render_scenes(0, "test", 5, 6, kind=kind)[0][0] != alone[0]
    n = rooms.SCENES_PER_TASK + 2
    one = list(rooms.iter_scenes(0, "train", n, workers=1, kind=kind))
    two = list(rooms.iter_scenes(0, "train", n, workers=2, kind=kind))
    assert [s[0] for s in one] == [s[0] for s in two]
    assert one[5][0] == alone[0]


def test_cli_writes_shards_labels_and_tfrecords(tmp_path):
    from dataset import tfrecord as tfr
    from gqn_dataset import GQNDataset, open_labels
    out = tmp_path / "rooms"
    rooms.main(["--out", str(out), "--train_scenes", "3", "--test_scenes", "5", "--seed", "2", "--workers",
                "1", "--scenes_per_shard", "2", "--tfrecord", "--files_per_split", "2", "--no_progress"])
    assert len(GQNDataset(str(out / "train"))) == 3 and len(GQNDataset(str(out / "test"))) == 5
    assert open_labels(out / "train") is None                  # labels for the test split only
    labels = open_labels(out / "test")
    assert len(labels) == 5 and len(list((out / "test").glob("shard-*.labels"))) == 3
    expected = rooms.render_scenes(2, "test", 0, 5, labels=True)
    for i, (_, _, label) in enumerate(expected):
        for v in (0, 9):
            got = labels.view(i, v)
            assert got.dtype == np.uint8 and got.shape == (64, 64)
            np.testing.assert_array_equal(got, label[v])
    images, viewpoints = GQNDataset(str(out / "test"))[4]
    np.testing.assert_allclose(viewpoints[:, :3].numpy(), expected[4][1][:, :3], atol=1e-6)
    records = [r for name in ("1-of-2.tfrecord", "2-of-2.tfrecord")
               for r in tfr.iter_tfrecord(out / "tfrecord" / "rooms_ring_camera" / "test" / name)]
    frames, cameras = tfr.decode_gqn_example(records[3])
    assert frames == expected[3][0] and np.array_equal(cameras, expected[3][1])

    damaged = out / "test" / "shard-00001.labels"
    data = bytearray(damaged.read_bytes())
    data[-3] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="shard-00001.labels is not a valid label file"):
        open_labels(out / "test").view(3, 0)             # the last scene of that file
    damaged.unlink()
    with pytest.raises(DatasetError, match="label files for some shards only"):
        open_labels(out / "test")


@pytest.mark.parametrize("args, message", [
    (["--train_scenes", "-2"], "--train_scenes is -2; pass 0 or more scenes."),
    (["--workers", "0"], "--workers is 0; pass 1 or more processes."),
    (["--scenes_per_shard", "0"], "--scenes_per_shard is 0; pass a positive number."),
    (["--tfrecord", "--files_per_split", "0"], "--files_per_split is 0; pass a positive number."),
    ([], "is not empty; pass --overwrite"),
])
def test_cli_bad_input_ends_in_one_sentence(tmp_path, args, message):
    out = tmp_path / "rooms"
    (out / "train").mkdir(parents=True)
    (out / "train" / "shard-00000.gqn").write_bytes(b"")       # an earlier run's output
    result = subprocess.run([sys.executable, "dataset/rooms.py", "--out", str(out), "--train_scenes", "1",
                             "--test_scenes", "1", "--no_progress"] + args,
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and message in result.stderr
    missing = subprocess.run([sys.executable, "dataset/rooms.py"], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 2 and "--out" in missing.stderr and "Traceback" not in missing.stderr


def test_ensure_builtin_rooms_renders_once(tmp_path, monkeypatch):
    root = rooms.builtin_root(tmp_path)
    assert root == os.path.join(tmp_path, "rooms_ring_camera")
    train_dir, test_dir = rooms.ensure_builtin_rooms(root, 2, 2, seed=1, workers=1, progress=False)
    from gqn_dataset import GQNDataset, open_labels
    assert len(GQNDataset(train_dir)) == 2 and len(open_labels(test_dir)) == 2
    calls = []
    monkeypatch.setattr(rooms, "render_split", lambda *a, **k: calls.append(a))
    assert rooms.ensure_builtin_rooms(root, 2, 2, seed=1, workers=1, progress=False) == (train_dir, test_dir)
    assert calls == []                                           # cached: nothing rendered again
    with pytest.raises(rooms.RenderError, match="at least one train and one test scene"):
        rooms.ensure_builtin_rooms(root, 0, 2, progress=False)


# ----------------------------------------------------------------------------- real data still reads

@pytest.mark.parametrize("kind", ["rooms_ring_camera", "rooms_free_camera_with_object_rotations"])
def test_rooms_tfrecords_convert_and_train_one_step(tmp_path, kind):
    """Rooms-shaped TFRecords (10 views, 64x64 or 128x128) -> dataset/convert2torch.py -> one training
    step."""
    require_tensorflow()                         # convert2torch.py reads TFRecords with TensorFlow
    out = tmp_path / "rooms"
    rooms.main(["--out", str(out), "--train_scenes", "4", "--test_scenes", "4", "--workers", "1",
                "--tfrecord", "--files_per_split", "2", "--no_progress", "--kind", kind])
    converted = tmp_path / "converted"
    subprocess.run([sys.executable, "dataset/convert2torch.py", kind, "--root",
                    str(out / "tfrecord"), "--out", str(converted), "--workers", "1",
                    "--no_progress"], cwd=ROOT, check=True,
                   capture_output=True, timeout=600)
    from gqn_dataset import GQNDataset
    images, viewpoints = GQNDataset(str(converted / "test"))[0]
    assert tuple(images.shape) == (10, 3, 64, 64) and tuple(viewpoints.shape) == (10, 7)
    result = subprocess.run([sys.executable, "train.py", "--dataset", "Room", "--train_data_dir",
                             str(converted / "train"), "--test_data_dir", str(converted / "test"),
                             "--gradient_steps", "1", "--batch_size", "2", "--layers", "1", "--h_dim", "8",
                             "--r_dim", "16", "--representation", "tower", "--root_log_dir",
                             str(tmp_path / "runs"), "--log_dir", "rooms", "--seed", "0", "--workers", "0",
                             "--eval_scenes", "2"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert list((tmp_path / "runs" / "rooms").rglob("*.pt")), "no checkpoint written"
    if kind != "rooms_ring_camera":  # 128-pixel frames converted as the ring's 64-pixel ones: one sentence
        (out / "tfrecord" / kind).rename(out / "tfrecord" / "rooms_ring_camera")
        wrong = subprocess.run([sys.executable, "dataset/convert2torch.py", "rooms_ring_camera", "--root",
                                str(out / "tfrecord"), "--out", str(tmp_path / "wrong"), "--workers", "1",
                                "--no_progress"], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert wrong.returncode != 0 and "Traceback" not in wrong.stderr and wrong.stderr.count("\n") == 1
        assert "128x128" in wrong.stderr and "64x64" in wrong.stderr
