"""Tests of gqn_dataset: the shard format, the readers, the samplers and the loader."""
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

import gqn_dataset as gd


def jpeg(color, size=64, seed=0):
    """A small JPEG frame: a coloured square on noise, so views differ and decoding is not trivial."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    pixels[size // 4: size // 2, size // 4: size // 2] = color
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def make_scenes(n, views=5, size=64, seed=0):
    """n scenes of `views` JPEG frames and raw cameras (views, 5)."""
    rng = np.random.default_rng(seed)
    scenes = []
    for i in range(n):
        frames = [jpeg(rng.integers(0, 256, 3), size, seed=1000 * seed + 10 * i + v) for v in range(views)]
        cameras = rng.uniform(-3, 3, (views, 5)).astype(np.float32)
        scenes.append((frames, cameras))
    return scenes


def pil_decode(data):
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_shard_round_trip_keeps_frames_and_cameras(tmp_path):
    scenes = make_scenes(7)
    assert gd.write_split(tmp_path, scenes, scenes_per_shard=3) == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-00000.gqn", "shard-00001.gqn", "shard-00002.gqn"]
    header = gd.read_shard_header(tmp_path / "shard-00002.gqn")
    assert (header["scenes"], header["views"], header["image_size"], header["camera"]) == (1, 5, 64, "x y z yaw pitch")
    folder = gd.open_split(tmp_path)
    assert len(folder) == 7
    for i in [6, 0, 4]:                                           # random access, last scene first
        raw = folder.read(i)
        assert raw.jpegs == scenes[i][0]                          # bytes kept exactly as encoded
        np.testing.assert_array_equal(raw.cameras, scenes[i][1])
        frames = gd.decode_views(raw)
        assert frames.shape == (5, 64, 64, 3) and frames.dtype == np.uint8
        for v in range(5):
            np.testing.assert_array_equal(frames[v], pil_decode(scenes[i][0][v]))
    raw = folder.read(3, views=[4, 1])
    assert raw.jpegs == [scenes[3][0][4], scenes[3][0][1]]
    np.testing.assert_array_equal(raw.cameras, scenes[3][1][[4, 1]])


def test_viewpoint_order_is_xyz_cos_sin_yaw_then_pitch():
    raw = np.array([[1.0, 2.0, 3.0, 0.3, -0.2]], np.float32)
    expected = [1, 2, 3, np.cos(0.3), np.sin(0.3), np.cos(-0.2), np.sin(-0.2)]
    np.testing.assert_allclose(gd.raw_to_viewpoint(raw)[0], expected, rtol=1e-6)
    np.testing.assert_allclose(gd.raw_to_viewpoint(torch.from_numpy(raw))[0].numpy(), expected, rtol=1e-6)
    deepmind = np.array([1, 2, 3, np.sin(0.3), np.cos(0.3), np.sin(-0.2), np.cos(-0.2)])
    np.testing.assert_allclose(gd.deepmind_to_project_viewpoint(deepmind), expected)
    np.testing.assert_allclose(gd.project_to_deepmind_viewpoint(np.array(expected)), deepmind)


def test_large_frames_are_resized_view_by_view(tmp_path):
    scenes = make_scenes(2, views=4, size=84)
    gd.write_split(tmp_path, scenes)
    frames = gd.decode_views(gd.open_split(tmp_path).read(1))
    assert frames.shape == (4, 64, 64, 3)
    for v in range(4):                                           # each view is its own source, resized
        source = Image.open(io.BytesIO(scenes[1][0][v])).convert("RGB").resize((64, 64), Image.BILINEAR)
        np.testing.assert_array_equal(frames[v], np.asarray(source))
