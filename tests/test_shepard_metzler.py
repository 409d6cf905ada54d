"""Tests of the Shepard-Metzler renderer (dataset/shepard_metzler.py) and the TFRecord codec
(dataset/tfrecord.py)."""
import json
import math
import os

import numpy as np
import pytest

from dataset import shepard_metzler as sm
from dataset import tfrecord as tfr
from dataset.jpeg import decode_jpeg

R = sm.CAMERA_DISTANCE


# ----------------------------------------------------------------------------- helpers

def look_at_projection(points, eye, fov_deg, size):
    """An independent pinhole camera at `eye` looking at the origin with world z up -> (cols, rows) (N,)."""
    forward = -eye / np.linalg.norm(eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    rel = np.asarray(points, dtype=np.float64) - eye
    depth = rel @ forward
    t = math.tan(math.radians(fov_deg) / 2)
    cols = ((rel @ right) / depth / t + 1) * size / 2
    rows = (1 - (rel @ up) / depth / t) * size / 2
    return cols, rows


def cube_corners(centre, size):
    offsets = np.array([[i, j, k] for i in (-.5, .5) for j in (-.5, .5) for k in (-.5, .5)]) * size
    return np.asarray(centre, dtype=np.float64) + offsets


def mask_box(image):
    """(col_min, col_max_exclusive, row_min, row_max_exclusive) of the non-black pixels of (H, W, 3)."""
    mask = image.max(axis=-1) > 0
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return cols[0], cols[-1] + 1, rows[0], rows[-1] + 1


# ----------------------------------------------------------------------------- camera convention

def test_camera_convention_on_known_points():
    cases = {  # position -> (yaw, pitch) from pitch = asin(-z/r), yaw = (-atan2(-y, -x)) mod 2 pi
        (R, 0, 0): (math.pi, 0.0),
        (-R, 0, 0): (0.0, 0.0),
        (0, R, 0): (math.pi / 2, 0.0),
        (0, -R, 0): (3 * math.pi / 2, 0.0),
        (0, 0, R): (None, -math.pi / 2),          # straight above: looks down, yaw undefined
        (R / 2, R / 2, R / math.sqrt(2)): (3 * math.pi / 4, -math.pi / 4),
        (R / 2, -R / 2, -R / math.sqrt(2)): (5 * math.pi / 4, math.pi / 4),
    }
    for pos, (yaw, pitch) in cases.items():
        cam = sm.camera_from_position(np.array(pos, dtype=np.float64))
        np.testing.assert_allclose(cam[:3], pos)
        assert cam[4] == pytest.approx(pitch, abs=1e-9), pos
        if yaw is not None:
            assert cam[3] == pytest.approx(yaw, abs=1e-9), pos
    rng = np.random.default_rng(0)
    pos = rng.standard_normal((50, 3)) * 2
    cam = sm.camera_from_position(pos)
    r = np.linalg.norm(pos, axis=1)
    np.testing.assert_allclose(cam[:, 4], np.arcsin(-pos[:, 2] / r))
    np.testing.assert_allclose(cam[:, 3], np.mod(-np.arctan2(-pos[:, 1], -pos[:, 0]), 2 * np.pi))
    assert np.all((cam[:, 3] >= 0) & (cam[:, 3] < 2 * np.pi))


def test_position_from_yaw_pitch_inverts_camera_from_position_and_bases_agree():
    rng = np.random.default_rng(1)
    pos = sm.random_cameras(rng, 200)
    cam = sm.camera_from_position(pos)
    np.testing.assert_allclose(np.linalg.norm(pos, axis=1), R)
    np.testing.assert_allclose(sm.position_from_yaw_pitch(cam[:, 3], cam[:, 4], R), pos, atol=1e-9)
    f1, r1, u1 = sm.camera_basis(cam[:, 3], cam[:, 4])
    f2, r2, u2 = sm.camera_basis_from_position(pos)
    np.testing.assert_allclose(f1, -pos / R, atol=1e-9)         # looks at the origin
    np.testing.assert_allclose(f1, f2, atol=1e-9)
    np.testing.assert_allclose(r1, r2, atol=1e-9)
    np.testing.assert_allclose(u1, u2, atol=1e-9)
    np.testing.assert_allclose(r1[:, 2], 0, atol=1e-12)           # no roll: right is horizontal
    assert np.all(u1[:, 2] >= 0)                                  # world z is up in the image
    # camera on +x looking at the origin: world +y is to its right, world +z above
    f, r, u = sm.camera_basis(math.pi, 0.0)
    np.testing.assert_allclose([f, r, u], [[-1, 0, 0], [0, 1, 0], [0, 0, 1]], atol=1e-12)


# ----------------------------------------------------------------------------- renderer geometry

@pytest.mark.parametrize("eye", [(R, 0, 0), (0, -R, 0), (1.2, -2.0, 2.3), (-2.5, 1.0, -1.9)])
def test_one_cube_lands_where_the_pinhole_projection_of_its_corners_says(eye):
    eye = np.array(eye, dtype=np.float64)
    eye = eye / np.linalg.norm(eye) * R
    centre, size = np.array([0.25, 0.4, -0.3]), 0.6
    image = sm.render_views(centre[None], np.array([[1.0, 0.5, 0.0]]), eye[None], cube_size=size)[0]
    cols, rows = look_at_projection(cube_corners(centre, size), eye, sm.FOV_DEG, sm.IMAGE_SIZE)
    c0, c1, r0, r1 = mask_box(image)
    assert abs(c0 - cols.min()) <= 1.5 and abs(c1 - cols.max()) <= 1.5
    assert abs(r0 - rows.min()) <= 1.5 and abs(r1 - rows.max()) <= 1.5
    ccol, crow = look_at_projection(centre[None], eye, sm.FOV_DEG, sm.IMAGE_SIZE)
    assert image[int(crow[0]), int(ccol[0])].max() > 0            # the projected centre is on the cube


def test_image_orientation_from_a_camera_on_the_x_axis():
    # camera at +x looking at -x: +y is on the right of the image, +z at the top
    eye = np.array([[R, 0, 0]])
    image = sm.render_views(np.array([[0.0, 0.8, 0.6]]), np.array([[1.0, 1.0, 1.0]]), eye, cube_size=0.3)[0]
    c0, c1, r0, r1 = mask_box(image)
    assert c0 > 32 and r1 < 32


def test_the_nearer_of_two_cubes_hides_the_farther():
    red, green = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    for order in (0, 1):
        cubes = np.array([[1.0, 0, 0], [-1.0, 0, 0]])[::1 - 2 * order]
        colours = np.array([red, green])[::1 - 2 * order]
        images = sm.render_views(cubes, colours, np.array([[R, 0, 0], [-R, 0, 0]]), cube_size=0.5)
        near_x, far_x = images[0, 32, 32], images[1, 32, 32]       # centre pixels
        assert near_x[0] > 0 and near_x[1] == 0, "seen from +x the red cube at x=+1 must hide the green one"
        assert far_x[1] > 0 and far_x[0] == 0, "seen from -x the green cube at x=-1 must hide the red one"
    # perspective: alone, the cube at x=-1 looks smaller from +x than the cube at x=+1
    eye = np.array([[R, 0, 0]])
    near = sm.render_views(np.array([[1.0, 0, 0]]), np.array([red]), eye, cube_size=0.5)[0]
    far = sm.render_views(np.array([[-1.0, 0, 0]]), np.array([red]), eye, cube_size=0.5)[0]
    assert (near.max(-1) > 0).sum() > 2 * (far.max(-1) > 0).sum()


def test_faces_are_flat_shaded_with_several_brightnesses():
    image = sm.render_views(np.zeros((1, 3)), np.array([[1.0, 1.0, 1.0]]),
                            np.array([[2.0, -1.5, 2.2]]), cube_size=1.0)[0]
    levels = np.unique(image[..., 0][image[..., 0] > 0])
    assert len(levels) == 3 and levels.max() <= 255          # three visible faces, one grey level each


# ----------------------------------------------------------------------------- objects and scenes

@pytest.mark.parametrize("parts", [5, 7])
def test_objects_are_self_avoiding_face_connected_paths_of_saturated_cubes(parts):
    for i in range(20):
        centres, colours, positions = sm.random_scene(3, "train", i, parts)
        steps = np.abs(np.diff(centres, axis=0)) / sm.CUBE_SIZE
        np.testing.assert_allclose(np.sort(steps, axis=1), [[0, 0, 1]] * (parts - 1), atol=1e-9)
        cells = {tuple(np.round(c / sm.CUBE_SIZE * 2).astype(int)) for c in centres}
        assert len(cells) == parts
        np.testing.assert_allclose(centres.mean(axis=0), 0, atol=1e-9)
        np.testing.assert_allclose(colours.max(axis=1), sm.VALUE, rtol=1e-6)
        np.testing.assert_allclose(colours.min(axis=1), sm.VALUE * (1 - sm.SATURATION), rtol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(positions, axis=1), R)


def test_a_five_cube_object_spans_20_to_35_pixels_and_stays_in_view():
    spans = []
    for frames in sm.render_batch(*zip(*[sm.random_scene(0, "train", i, 5) for i in range(30)])):
        for image in frames:
            c0, c1, r0, r1 = mask_box(image)
            spans.append(max(c1 - c0, r1 - r0))
            mask = image.max(-1) > 0
            assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
    assert 20 <= np.median(spans) <= 35


def test_frame_statistics_on_a_known_frame_and_both_dtypes_and_layouts():
    frame = np.zeros((64, 64, 3), dtype=np.float32)
    frame[10:20, 5:35] = [0.5, 0.25, 0.0]         # a 10 x 30 box, largest channel 0.5
    frame[40, 40] = [0.05, 0.08, 0.0]              # not above the 0.1 threshold: background
    empty = np.zeros_like(frame)                   # frames without object pixels have no span
    stats = sm.frame_statistics(np.stack([frame, empty]))
    assert stats["coverage"] == pytest.approx(300 / (2 * 64 * 64))
    assert stats["mean_pixel"] == pytest.approx((300 * 0.75 + 0.13) / (2 * 64 * 64 * 3))
    assert stats["object_max_channel_mean"] == pytest.approx(0.5)
    assert stats["span_px"] == 30.0
    as_uint8 = (np.stack([frame, empty]) * 255 + 0.5).astype(np.uint8)
    # uint8 is divided by 255; leading dims are frames
    for k, v in sm.frame_statistics(as_uint8[None]).items():
        assert v == pytest.approx(stats[k], rel=0.01), k
    assert sm.frame_statistics(empty[None]) == dict(coverage=0.0, mean_pixel=0.0, object_max_channel_mean=0.0,
                                                    span_px=0.0)
    with pytest.raises(ValueError, match="frames"):
        sm.frame_statistics(np.zeros((2, 3, 64, 64)))


def test_built_in_five_cube_frames_look_like_deepminds_real_ones():
    # a user would notice if the built-in scenes stopped resembling shepard_metzler_5_parts: the object's
    # coverage, brightness and size on the decoded JPEG frames stay within 10 % of the real data's
    frames = np.stack([decode_jpeg(jpeg) for scene, _ in sm.render_scenes(0, "train", 0, 100, 5)
                       for jpeg in scene])
    assert frames.shape == (1500, 64, 64, 3)
    stats = sm.frame_statistics(frames)
    for name, real in sm.REAL_SM5_STATISTICS.items():
        assert stats[name] == pytest.approx(real, rel=0.10), (name, stats[name], real)


def test_same_seed_same_bytes_and_independent_of_batching_and_workers():
    a = sm.render_scenes(0, "train", 0, 4, 5)
    b = sm.render_scenes(0, "train", 0, 4, 5)
    assert a[0][0] == b[0][0] and all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert [x[0] for x in a] == [x[0] for x in b]
    assert [x[0] for x in sm.render_scenes(0, "train", 2, 4, 5)] == [x[0] for x in a[2:]]
    assert sm.render_scenes(1, "train", 0, 1, 5)[0][0] != a[0][0]
    assert sm.render_scenes(0, "test", 0, 1, 5)[0][0] != a[0][0]
    n = sm.SCENES_PER_TASK + 3
    one = list(sm.iter_scenes(0, "train", n, 7, workers=1))
    two = list(sm.iter_scenes(0, "train", n, 7, workers=2))
    assert [s[0] for s in one] == [s[0] for s in two]


# ----------------------------------------------------------------------------- written data

def test_written_split_loads_with_gqn_dataset(tmp_path):
    from gqn_dataset import GQNDataset
    n = sm.render_split(tmp_path / "train", "train", 10, 5, seed=0, scenes_per_shard=4)
    assert n == 10 and len(list((tmp_path / "train").glob("shard-*.gqn"))) == 3
    data = GQNDataset(str(tmp_path / "train"))
    assert len(data) == 10
    images, viewpoints = data[7]
    assert tuple(images.shape) == (15, 3, 64, 64) and tuple(viewpoints.shape) == (15, 7)
    assert float(images.min()) >= 0 and float(images.max()) <= 1 and float(images.max()) > 0.5
    _, cameras = sm.render_scenes(0, "train", 7, 8, 5)[0]
    v = viewpoints.numpy()
    np.testing.assert_allclose(v[:, :3], cameras[:, :3], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(v[:, :3], axis=1), R, atol=1e-4)
    yaw, pitch = cameras[:, 3], cameras[:, 4]
    expected = np.stack([np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)], 1)
    np.testing.assert_allclose(v[:, 3:], expected, atol=1e-5)


def test_cli_writes_both_formats_and_refuses_to_mix_runs(tmp_path):
    out = tmp_path / "sm"
    args = ["--out", str(out), "--parts", "7", "--train_scenes", "5", "--test_scenes", "3", "--seed", "4",
            "--workers", "1", "--no_progress", "--tfrecord", "--files_per_split", "2"]
    sm.main(args)
    tf_dir = out / "tfrecord" / "shepard_metzler_7_parts"
    assert sorted(os.listdir(tf_dir / "train")) == ["1-of-2.tfrecord", "2-of-2.tfrecord"]
    records = [r for name in ("1-of-2.tfrecord", "2-of-2.tfrecord")
               for r in tfr.iter_tfrecord(tf_dir / "train" / name)]
    assert len(records) == 5
    expected = sm.render_scenes(4, "train", 0, 5, 7)
    for record, (frames, cameras) in zip(records, expected):
        got_frames, got_cameras = tfr.decode_gqn_example(record)
        assert got_frames == frames
        np.testing.assert_array_equal(got_cameras, cameras)
    assert len(list(tfr.iter_tfrecord(tf_dir / "test" / "1-of-2.tfrecord"))) == 2
    with pytest.raises(SystemExit, match="not empty; pass --overwrite"):
        sm.main(args)
    sm.main(args + ["--overwrite", "--train_scenes", "2"])
    from gqn_dataset import GQNDataset
    assert len(GQNDataset(str(out / "train"))) == 2
    with pytest.raises(SystemExit, match="--parts is 0"):
        sm.main(["--out", str(tmp_path / "x"), "--parts", "0"])


def test_cli_render_that_fails_midway_leaves_the_earlier_data_whole(tmp_path, monkeypatch):
    """--overwrite deleted the earlier splits before rendering, and a killed render left a part of a split
    that trains without a word; now the new splits replace the old only once they are complete."""
    out = tmp_path / "sm"
    args = ["--out", str(out), "--parts", "5", "--train_scenes", "4", "--test_scenes", "2", "--workers", "1",
            "--no_progress", "--scenes_per_shard", "2"]
    sm.main(args)
    before = {split: sorted(os.listdir(out / split)) for split in ("train", "test")}
    real = sm.render_split

    def dies_on_test(split_dir, split, *a, **k):
        if split == "test":
            raise sm.RenderError("killed")
        return real(split_dir, split, *a, **k)
    monkeypatch.setattr(sm, "render_split", dies_on_test)
    with pytest.raises(SystemExit, match="killed"):
        sm.main(args[:5] + ["6"] + args[6:] + ["--overwrite"])
    from gqn_dataset import GQNDataset
    assert {split: sorted(os.listdir(out / split)) for split in ("train", "test")} == before
    assert len(GQNDataset(str(out / "train"))) == 4


def test_ensure_builtin_dataset_renders_once_and_rerenders_on_change(tmp_path, monkeypatch):
    root = tmp_path / "builtin"
    kwargs = dict(parts=5, train_scenes=6, test_scenes=3, seed=0, workers=1, progress=False)
    train_dir, test_dir = sm.ensure_builtin_dataset(root, **kwargs)
    from gqn_dataset import GQNDataset
    assert len(GQNDataset(train_dir)) == 6 and len(GQNDataset(test_dir)) == 3
    done = json.loads((root / "DONE.json").read_text())
    assert done["parts"] == 5 and done["train_scenes"] == 6 and done["cube_size"] == sm.CUBE_SIZE

    calls = []
    real_render_split = sm.render_split
    monkeypatch.setattr(sm, "render_split", lambda *a, **k: calls.append(a) or real_render_split(*a, **k))
    assert sm.ensure_builtin_dataset(root, **kwargs) == (train_dir, test_dir)
    assert calls == []                                                # cached: nothing rendered
    sm.ensure_builtin_dataset(root, **dict(kwargs, train_scenes=4))  # a split's parameters changed: it alone
    assert [a[1] for a in calls] == ["train"] and len(GQNDataset(train_dir)) == 4
    (root / "DONE.json").unlink()                                     # as after a killed render
    sm.ensure_builtin_dataset(root, **dict(kwargs, train_scenes=4))
    assert len(calls) == 3 and (root / "DONE.json").exists() and not (root / ".rendering").exists()

    def killed(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(sm, "render_split", killed)
    with pytest.raises(KeyboardInterrupt):
        sm.ensure_builtin_dataset(root, **kwargs)
    assert not (root / "DONE.json").exists()                          # never looks complete

    foreign = tmp_path / "foreign"
    (foreign / "train").mkdir(parents=True)
    (foreign / "train" / "notes.txt").write_text("mine")
    with pytest.raises(sm.RenderError, match="not dataset shards"):
        sm.ensure_builtin_dataset(foreign, **kwargs)
    assert (foreign / "train" / "notes.txt").exists()


# ----------------------------------------------------------------------------- TFRecord codec

def test_crc32c_known_value_and_vectorised_path():
    assert tfr.crc32c(b"123456789") == 0xE3069283
    assert tfr.crc32c(b"") == 0
    rng = np.random.default_rng(0)
    for n in (1, 63, 511, 512, 513, 4097, 30001):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert tfr.crc32c(data) == tfr._crc_update(0xFFFFFFFF, data) ^ 0xFFFFFFFF


def test_example_and_record_bytes_match_tensorflow():
    # bytes produced by TensorFlow 2.21 (Example.SerializeToString(deterministic=True) and TFRecordWriter)
    example = tfr.encode_example({"frames": ("bytes", [b"ab"]), "cameras": ("float", [1.5, -2.0])})
    assert example == (b"\n+\n\x17\n\x07cameras\x12\x0c\x12\n\n\x08\x00\x00\xc0?\x00\x00\x00\xc0"
                       b"\n\x10\n\x06frames\x12\x06\n\x04\n\x02ab")
    assert tfr.frame_record(b"ab") == b"\x02\x00\x00\x00\x00\x00\x00\x00x'\x0b4ab\x1c\xb0\xf0\xf4"


def test_example_round_trip():
    features = {"frames": ("bytes", [b"", b"\xff\xd8" * 100]), "cameras": ("float", np.linspace(-3, 3, 10)),
                "ids": ("int64", [0, 1, -5, 2 ** 40, -(2 ** 63)])}
    parsed = tfr.parse_example(tfr.encode_example(features))
    assert parsed["frames"] == ("bytes", [b"", b"\xff\xd8" * 100])
    assert parsed["cameras"][0] == "float"
    np.testing.assert_array_equal(parsed["cameras"][1], np.linspace(-3, 3, 10).astype(np.float32))
    assert parsed["ids"][0] == "int64" and parsed["ids"][1].tolist() == [0, 1, -5, 2 ** 40, -(2 ** 63)]
    with pytest.raises(tfr.TFRecordError, match="not a gqn-datasets Example"):
        tfr.decode_gqn_example(tfr.encode_example({"x": ("int64", [1])}))


def test_tfrecord_round_trip_and_clear_errors_on_damage(tmp_path):
    path = tmp_path / "1-of-1.tfrecord"
    frames = [bytes([i]) * (100 * i + 1) for i in range(15)]
    cameras = np.arange(75, dtype=np.float32).reshape(15, 5)
    records = [tfr.encode_gqn_example(frames, cameras + k) for k in range(3)]
    assert tfr.write_tfrecord(path, records) == 3
    read = list(tfr.iter_tfrecord(path))
    assert read == records
    got_frames, got_cameras = tfr.decode_gqn_example(read[2])
    assert got_frames == frames and np.array_equal(got_cameras, cameras + 2)
    data = path.read_bytes()

    truncated = tmp_path / "truncated.tfrecord"
    truncated.write_bytes(data[:-10])
    with pytest.raises(tfr.TFRecordError, match=r"truncated\.tfrecord: record 2 is truncated"):
        list(tfr.iter_tfrecord(truncated))
    flipped = bytearray(data)
    flipped[len(records[0]) + 16 + 12 + 40] ^= 0x01             # a byte inside record 1's data
    damaged = tmp_path / "flipped.tfrecord"
    damaged.write_bytes(bytes(flipped))
    with pytest.raises(tfr.TFRecordError, match=r"flipped\.tfrecord: record 1 is corrupt"):
        list(tfr.iter_tfrecord(damaged))
    flipped = bytearray(data)
    flipped[0] ^= 0x01                                          # record 0's length
    damaged.write_bytes(bytes(flipped))
    with pytest.raises(tfr.TFRecordError, match="record 0 has a corrupt length"):
        list(tfr.iter_tfrecord(damaged))
    assert tfr.tfrecord_name(3, 120) == "003-of-120.tfrecord"
