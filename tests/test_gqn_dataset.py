"""Tests of gqn_dataset: the shard format, the readers, the samplers and the loader."""
import collections
import gzip
import io
import os
import pickle
import sys

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


def test_decode_jpeg_gives_rgb_and_refuses_truncated_data():
    grey = io.BytesIO()
    Image.new("L", (64, 64), 77).save(grey, format="JPEG")
    frame = gd.decode_jpeg(grey.getvalue())
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8 and (frame == 77).all()
    data = jpeg((200, 10, 10))
    with pytest.raises(gd.DatasetError, match="the frame is not a readable JPEG"):
        gd.decode_jpeg(data[:len(data) // 2], where="the frame")


# --- jpeg_info: the structural JPEG check ------------------------------------------------------

def encode(image, **options):
    out = io.BytesIO()
    image.save(out, format="JPEG", **options)
    return out.getvalue()


def noise(size, mode="RGB", seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


def image_data_start(data):
    """Index of the first byte after the first scan header (FFDA segment), found independently."""
    at = 2
    while data[at + 1] != 0xDA:
        at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
    return at + 2 + int.from_bytes(data[at + 2:at + 4], "big")


@pytest.mark.parametrize("size", [64, 84, 128])
def test_jpeg_info_reads_size_and_components_of_good_frames(size):
    frames = {"baseline": encode(noise(size), quality=90), "progressive": encode(noise(size), progressive=True),
              "optimized tables": encode(noise(size), optimize=True), "4:4:4": encode(noise(size), subsampling=0),
              "with exif": encode(noise(size), exif=Image.Exif()), "grey": encode(noise(size, "L")),
              "cmyk": encode(noise(size, "CMYK")), "zero padded": encode(noise(size)) + bytes(6)}
    components = {"grey": 1, "cmyk": 4}
    for name, data in frames.items():
        for _ in range(2):                                # walked, then from the kept headers
            assert gd.jpeg_info(data, name) == (size, size, components.get(name, 3)), name
        assert gd.decode_jpeg(data).shape == (size, size, 3)            # the loader agrees
    assert gd.jpeg_info(bytearray(frames["baseline"])) == (size, size, 3)
    assert gd.jpeg_info(memoryview(frames["baseline"])) == (size, size, 3)
    wide = encode(Image.new("RGB", (size + 16, size), (9, 9, 9)))
    assert gd.jpeg_info(wide) == (size, size + 16, 3)                    # (height, width, components)


def test_jpeg_info_refuses_every_truncation():
    for data in (encode(noise(64)), encode(noise(84), progressive=True)):
        gd.jpeg_info(data)                                               # its headers are kept from here on
        for cut in range(len(data)):                                     # in the headers and in the image data
            with pytest.raises(gd.DatasetError) as error:
                gd.jpeg_info(data[:cut], "scene 3 view 2")
            message = str(error.value)
            assert message.startswith("scene 3 view 2 is not a well-formed JPEG: ") and "\n" not in message, message
        with pytest.raises(gd.DatasetError, match="does not end with the end-of-image marker FFD9"):
            gd.jpeg_info(data[:len(data) // 2] + bytes(100))             # cut, then zero padded


def test_jpeg_info_refuses_missing_soi_or_eoi_and_other_formats():
    data = encode(noise(64))
    cases = {"no SOI": (data[2:], "does not start with the start-of-image marker FFD8"),
             "SOI damaged": (b"\xff\xd9" + data[2:], "does not start with the start-of-image marker FFD8"),
             "no EOI": (data[:-2], "does not end with the end-of-image marker FFD9"),
             "EOI damaged": (data[:-1] + b"\xd8", "does not end with the end-of-image marker FFD9"),
             "no image data": (data[:image_data_start(data)] + b"\xff\xd9", "has no image data between"),
             "PNG": (b"\x89PNG\r\n\x1a\n" + bytes(60), "does not start with the start-of-image marker"),
             "empty": (b"", "does not start with the start-of-image marker"),
             "text": (b"hello, this is not an image", "does not start with the start-of-image marker"),
             "EOI in headers": (data[:2] + b"\xff\xd9" + data[2:], "the end-of-image marker FFD9 at byte 2"),
             "length past the end": (data[:4] + b"\xff\xf0" + data[6:], "FFE0 segment at byte 2 has the length 65520"),
             "garbage between segments": (data[:20] + b"\x00" + data[20:], "byte 20 should start a marker"),
             "lossless JPEG": (data.replace(b"\xff\xc0", b"\xff\xc3", 1), "the JPEG process FFC3"),
             "no frame header": (data.replace(b"\xff\xc0", b"\xff\xe5", 1), "comes before any frame header")}
    for name, (bad, reason) in cases.items():
        with pytest.raises(gd.DatasetError) as error:
            gd.jpeg_info(bad, "the frame")
        assert str(error.value).startswith("the frame is not a well-formed JPEG: "), name
        assert reason in str(error.value) and str(error.value).endswith("."), (name, str(error.value))
    for not_bytes in ("a string", None, [255, 216]):
        with pytest.raises(gd.DatasetError, match="the frame is a .*, not JPEG bytes"):
            gd.jpeg_info(not_bytes, "the frame")


def test_jpeg_info_leaves_damaged_image_data_to_the_decoder():
    # damage after the scan header is not structural: jpeg_info passes it, decode_jpeg refuses it
    data = encode(noise(64))
    middle = (image_data_start(data) + len(data)) // 2
    bad = data[:middle] + b"\xff\xd8" + data[middle + 2:]
    assert gd.jpeg_info(bad) == (64, 64, 3)
    with pytest.raises(gd.DatasetError, match="is not a readable JPEG"):
        gd.decode_jpeg(bad)


def test_write_shard_refuses_malformed_non_square_and_mixed_frames_naming_scene_and_view(tmp_path):
    scenes = make_scenes(3, views=4)
    frames, cameras = [list(f) for f, _ in scenes], np.stack([c for _, c in scenes])
    path = tmp_path / "shard-00000.gqn"
    for bad, message in [(frames[2][1][:-30], "scene 2 view 1 is not a well-formed JPEG: it does not end with"),
                         (b"GIF89a", "scene 2 view 1 is not a well-formed JPEG: it does not start with"),
                         ("text", "scene 2 view 1 is a str, not JPEG bytes"),
                         (encode(Image.new("RGB", (96, 64))), "scene 2 view 1 is a 96x64 JPEG; frames must be square"),
                         (encode(noise(48)), "scene 2 view 1 is a 48x48 JPEG; frames must be square JPEGs of "
                                             "at least 64"),
                         (encode(noise(84)), "its frames have several sizes [64, 84]")]:
        with pytest.raises(gd.DatasetError) as error:
            gd.write_shard(path, frames[:2] + [frames[2][:1] + [bad] + frames[2][2:]], cameras)
        assert message in one_sentence(error, path)
        assert not list(tmp_path.iterdir())                               # nothing written
    grey = encode(noise(64, "L"))                                         # grey frames are kept (loaded as RGB)
    gd.write_shard(path, frames[:2] + [[bytearray(grey), memoryview(grey)] + frames[2][2:]], cameras)
    raw = gd.open_split(tmp_path).read(2)
    assert raw.jpegs[:2] == [grey, grey] and raw.jpegs[2:] == frames[2][2:]
    assert gd.read_shard_header(path)["image_size"] == 64


def test_large_frames_are_resized_view_by_view(tmp_path):
    scenes = make_scenes(2, views=4, size=84)
    gd.write_split(tmp_path, scenes)
    frames = gd.decode_views(gd.open_split(tmp_path).read(1))
    assert frames.shape == (4, 64, 64, 3)
    for v in range(4):                                           # each view is its own source, resized
        source = Image.open(io.BytesIO(scenes[1][0][v])).convert("RGB").resize((64, 64), Image.BILINEAR)
        np.testing.assert_array_equal(frames[v], np.asarray(source))


# --- GQNDataset: the original contract --------------------------------------------------------

def test_gqn_dataset_items_match_the_source_scenes(tmp_path):
    scenes = make_scenes(7)
    gd.write_split(tmp_path, scenes, scenes_per_shard=3)
    dataset = gd.GQNDataset(tmp_path)
    assert len(dataset) == 7
    images, viewpoints = dataset[6]                                # the last scene, read first
    assert images.shape == (5, 3, 64, 64) and images.dtype == torch.float32
    assert viewpoints.shape == (5, 7) and viewpoints.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1 and images.is_contiguous()
    expected = np.stack([pil_decode(f) for f in scenes[6][0]]).transpose(0, 3, 1, 2) / 255
    np.testing.assert_allclose(images.numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(viewpoints.numpy(), gd.raw_to_viewpoint(scenes[6][1]), rtol=1e-6, atol=1e-6)
    flipped = gd.GQNDataset(tmp_path, transform=lambda x: 1 - x, target_transform=lambda v: v[:, :3])
    images2, viewpoints2 = flipped[6]
    assert torch.equal(images2, 1 - images) and viewpoints2.shape == (5, 3)


def test_scene_views_decodes_the_asked_views_in_order(tmp_path):
    scenes = make_scenes(4)
    gd.write_split(tmp_path, scenes, scenes_per_shard=2)
    frames, viewpoints = gd.SceneViews(tmp_path)[(3, (4, 0, 2))]
    assert frames.shape == (3, 3, 64, 64) and frames.dtype == torch.uint8
    for j, v in enumerate((4, 0, 2)):
        np.testing.assert_array_equal(frames[j].permute(1, 2, 0).numpy(), pil_decode(scenes[3][0][v]))
    np.testing.assert_allclose(viewpoints.numpy(), gd.raw_to_viewpoint(scenes[3][1][[4, 0, 2]]), atol=1e-6)


# --- samplers ---------------------------------------------------------------------------------

def batches(sampler, n):
    it = iter(sampler)
    return [next(it) for _ in range(n)]


def test_context_sampler_draws_distinct_views_and_m_in_range():
    sampler = gd.ContextBatchSampler(num_scenes=50, num_views=10, batch_size=8, max_context=5, seed=3)
    seen_m = set()
    for batch in batches(sampler, 60):
        assert len(batch) == 8
        m = len(batch[0][1]) - 1
        seen_m.add(m)
        for scene, views in batch:
            assert len(views) == m + 1                                   # same M for the whole batch
            assert len(set(views)) == m + 1                              # the query (last) is not a context view
            assert all(0 <= v < 10 for v in views) and 0 <= scene < 50
    assert seen_m == {1, 2, 3, 4, 5}


def test_context_sampler_visits_every_scene_once_per_epoch():
    sampler = gd.ContextBatchSampler(num_scenes=20, num_views=4, batch_size=6, max_context=3, seed=0)
    assert sampler.batches_per_epoch == 3                                # the partial batch is dropped
    for epoch in range(2):
        scenes = [s for k in range(3 * epoch, 3 * epoch + 3) for s, _ in sampler.batch(k)]
        assert len(set(scenes)) == 18
    assert [s for s, _ in sampler.batch(0)] != [s for s, _ in sampler.batch(3)]   # reshuffled per epoch


def test_context_sampler_is_a_function_of_seed_and_step():
    make = lambda seed, start=0: gd.ContextBatchSampler(40, 8, 6, 4, seed, start_batch=start)
    assert batches(make(1), 10) == batches(make(1), 10)
    assert batches(make(1), 10) != batches(make(2), 10)
    assert batches(make(1, start=7), 5) == batches(make(1), 12)[7:]    # resuming = skipping


def test_context_sampler_ranks_partition_the_global_batch_with_one_m():
    whole = gd.ContextBatchSampler(40, 8, 6, 4, seed=5)
    ranks = [gd.ContextBatchSampler(40, 8, 6, 4, seed=5, rank=r, world_size=3) for r in range(3)]
    for k in range(10):
        parts = [sampler.batch(k) for sampler in ranks]
        assert [len(p) for p in parts] == [2, 2, 2]
        assert parts[0] + parts[1] + parts[2] == whole.batch(k)
        assert len({len(views) for part in parts for _, views in part}) == 1


def test_sampler_settings_that_cannot_work_are_refused():
    with pytest.raises(gd.DatasetError, match="divisible by the world size"):
        gd.ContextBatchSampler(40, 8, 6, 4, seed=0, rank=0, world_size=4)
    with pytest.raises(gd.DatasetError, match="needs 9 views"):
        gd.ContextBatchSampler(40, 8, 6, 8, seed=0)
    with pytest.raises(gd.DatasetError, match="does not fit 4 scenes"):
        gd.ContextBatchSampler(4, 8, 6, 3, seed=0)


def test_fixed_context_sampler_is_finite_and_repeatable():
    sampler = gd.FixedContextSampler(num_scenes=10, num_views=6, batch_size=4, num_context=3, seed=9)
    first, second = list(sampler), list(sampler)
    assert first == second and len(first) == len(sampler) == 3
    assert [s for batch in first for s, _ in batch] == list(range(10))
    assert all(len(views) == 4 and len(set(views)) == 4 for batch in first for _, views in batch)
    halves = [list(gd.FixedContextSampler(10, 6, 4, 3, seed=9, rank=r, world_size=2)) for r in range(2)]
    assert [a + b for a, b in zip(*halves)] == first


def test_context_count_for_dataset():
    assert [gd.context_count_for_dataset(n) for n in ("Shepard-Metzler", "room", "JACO", "Labyrinth")] == [15, 5, 7, 20]
    with pytest.raises(gd.DatasetError, match="Shepard-Metzler, Room, Jaco, Labyrinth"):
        gd.context_count_for_dataset("mazes")


# --- loaders ----------------------------------------------------------------------------------

def test_loader_batches_hold_the_sampled_views(tmp_path):
    scenes = make_scenes(9)
    gd.write_split(tmp_path, scenes, scenes_per_shard=4)
    loader = gd.make_loader(tmp_path, batch_size=4, max_context=3, seed=0, workers=0)
    frames, viewpoints, skipped = next(iter(loader))
    assert skipped == 0
    keys = loader.batch_sampler.batch(0)
    m1 = len(keys[0][1])
    assert frames.shape == (4, m1, 3, 64, 64) and frames.dtype == torch.uint8
    assert viewpoints.shape == (4, m1, 7) and viewpoints.dtype == torch.float32
    dataset = gd.GQNDataset(tmp_path)
    for b, (scene, views) in enumerate(keys):
        images, v = dataset[scene]
        assert torch.equal(frames[b], (images[list(views)] * 255).round().to(torch.uint8))
        assert torch.allclose(viewpoints[b], v[list(views)])


def test_loader_with_workers_gives_the_same_batches(tmp_path):
    gd.write_split(tmp_path, make_scenes(12), scenes_per_shard=5)
    take = lambda workers: batches(gd.make_loader(tmp_path, 4, 3, seed=1, workers=workers, start_batch=2), 4)
    serial, parallel = take(0), take(2)
    for (f0, v0, _), (f2, v2, _) in zip(serial, parallel):
        assert torch.equal(f0, f2) and torch.equal(v0, v2)


def test_eval_loader_covers_the_first_scenes_with_fixed_context(tmp_path):
    gd.write_split(tmp_path, make_scenes(6))
    loader = gd.make_eval_loader(tmp_path, num_scenes=5, batch_size=2, num_context=3, seed=0)
    shapes = [tuple(frames.shape) for frames, _ in loader]
    assert shapes == [(2, 4, 3, 64, 64), (2, 4, 3, 64, 64), (1, 4, 3, 64, 64)]
    with pytest.raises(gd.DatasetError, match="fewer than the 7"):
        gd.make_eval_loader(tmp_path, num_scenes=7, batch_size=2, num_context=3, seed=0)


# --- bad input: one clear sentence naming the file --------------------------------------------

def one_sentence(error, path):
    message = str(error.value)
    assert str(path) in message, message
    assert "\n" not in message and message.endswith("."), message
    return message


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(gd.DatasetError) as error:
        gd.GQNDataset(tmp_path / "nope")
    assert "does not exist" in one_sentence(error, tmp_path / "nope")
    with pytest.raises(gd.DatasetError) as error:
        gd.GQNDataset(tmp_path)
    assert "no shard-*.gqn files" in one_sentence(error, tmp_path)
    gd.write_split(tmp_path / "train", make_scenes(1))
    with pytest.raises(gd.DatasetError) as error:
        gd.make_loader(tmp_path, 1, 1, seed=0, workers=0)
    assert "train" in one_sentence(error, tmp_path)                      # points at the split folder


@pytest.mark.parametrize("damage", ["magic", "json", "truncated"])
def test_corrupt_shard_header_is_refused_when_opening(tmp_path, damage):
    gd.write_split(tmp_path, make_scenes(2))
    shard = tmp_path / "shard-00000.gqn"
    data = bytearray(shard.read_bytes())
    if damage == "magic":
        data[:8] = b"NOTASHRD"
    elif damage == "json":
        data[16:18] = b"]]"
    else:
        del data[-10:]
    shard.write_bytes(bytes(data))
    with pytest.raises(gd.DatasetError) as error:
        gd.GQNDataset(tmp_path)
    assert "not a valid GQN shard" in one_sentence(error, shard)


def patch(shard, offset, new):
    data = bytearray(shard.read_bytes())
    data[offset:offset + len(new)] = new
    shard.write_bytes(bytes(data))


def test_corrupt_jpeg_names_shard_scene_and_view(tmp_path):
    scenes = make_scenes(3)
    gd.write_split(tmp_path, scenes)
    shard = tmp_path / "shard-00000.gqn"
    header = gd.read_shard_header(shard)
    start = header["blob_offset"] + sum(len(f) for f in scenes[0][0]) + sum(len(f) for f in scenes[1][0][:2])
    patch(shard, start, bytes(len(scenes[1][0][2])))                     # scene 1 view 2 -> zeros
    dataset = gd.GQNDataset(tmp_path)
    dataset[0]
    with pytest.raises(gd.DatasetError) as error:
        dataset[1]
    assert "scene 1 view 2 is not a readable JPEG" in one_sentence(error, shard)
    gd.SceneViews(tmp_path)[(1, (0, 1))]                                 # other views still decode


def test_nan_cameras_are_refused_on_write_and_on_read(tmp_path):
    frames, cameras = zip(*make_scenes(2))
    bad = np.stack(cameras)
    bad[1, 3, 4] = np.nan
    with pytest.raises(gd.DatasetError) as error:
        gd.write_shard(tmp_path / "shard-00000.gqn", list(frames), bad)
    assert "scene 1 hold NaN or inf" in one_sentence(error, tmp_path / "shard-00000.gqn")
    assert not list(tmp_path.iterdir())                                  # nothing half written
    gd.write_shard(tmp_path / "shard-00000.gqn", list(frames), np.stack(cameras))
    shard = tmp_path / "shard-00000.gqn"
    header = gd.read_shard_header(shard)
    patch(shard, header["cameras_offset"] + (5 + 3) * 20 + 12, np.float32(np.inf).tobytes())
    with pytest.raises(gd.DatasetError) as error:
        gd.GQNDataset(tmp_path)[1]
    assert "scene 1 has NaN or inf cameras" in one_sentence(error, shard)


def test_writing_into_a_missing_folder_is_one_sentence(tmp_path):
    frames, cameras = zip(*make_scenes(1))
    path = tmp_path / "nope" / "shard-00000.gqn"
    with pytest.raises(gd.DatasetError) as error:
        gd.write_shard(path, list(frames), np.stack(cameras))
    one_sentence(error, path)


def test_wrong_number_of_cameras_or_frames_is_refused(tmp_path):
    frames, cameras = zip(*make_scenes(2))
    path = tmp_path / "shard-00000.gqn"
    with pytest.raises(gd.DatasetError) as error:
        gd.write_shard(path, list(frames), np.stack(cameras)[:, :4])
    assert "cameras of shape (n, S, 5)" in one_sentence(error, path)
    with pytest.raises(gd.DatasetError) as error:
        gd.write_shard(path, [frames[0], frames[1][:4]], np.stack(cameras))
    one_sentence(error, path)
    with pytest.raises(gd.DatasetError) as error:
        gd.write_split(tmp_path, [(frames[0], cameras[0][:3])])
    one_sentence(error, tmp_path)


def test_frames_of_another_size_than_the_header_says_are_refused(tmp_path):
    gd.write_split(tmp_path, make_scenes(2))
    shard = tmp_path / "shard-00000.gqn"
    data = shard.read_bytes()
    patch(shard, data.index(b'"image_size": 64'), b'"image_size": 96')
    with pytest.raises(gd.DatasetError) as error:
        gd.GQNDataset(tmp_path)[0]
    assert "view 0 is 64x64 but should be 96x96" in one_sentence(error, shard)


def test_shards_of_different_view_counts_are_refused(tmp_path):
    gd.write_split(tmp_path, make_scenes(2, views=5))
    gd.write_split(tmp_path, make_scenes(2, views=4), start_shard=1)
    with pytest.raises(gd.DatasetError) as error:
        gd.SceneViews(tmp_path)
    one_sentence(error, tmp_path / "shard-00001.gqn")


# --- folders converted by the original torch-gqn ----------------------------------------------

# torch-gqn's converter defines this namedtuple in its __main__ and torch.save's it per scene.
Scene = collections.namedtuple("Scene", ["frames", "cameras"], module="__main__")


def save_like_torch_gqn(path, frames, cameras, gz, zip_format=False):
    scene = Scene(np.array(frames + [b""], dtype=object)[:-1], cameras)  # object array of JPEG bytes
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        torch.save(scene, f, _use_new_zipfile_serialization=zip_format)


@pytest.fixture
def torch_gqn_main(monkeypatch):
    monkeypatch.setattr(sys.modules["__main__"], "Scene", Scene, raising=False)


@pytest.mark.parametrize("suffix", [".pt", ".pt.gz"])
def test_torch_gqn_folders_load_like_shards(tmp_path, torch_gqn_main, suffix):
    scenes = make_scenes(4)
    gd.write_split(tmp_path / "shards", scenes)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for number, (frames, cameras) in zip([0, 2, 3, 11], scenes):         # the converter's numbering skips
        save_like_torch_gqn(legacy / f"{number}{suffix}", frames, cameras[None], gz=suffix == ".pt.gz")
    shards, old = gd.GQNDataset(tmp_path / "shards"), gd.GQNDataset(legacy)
    assert len(old) == 4
    for i in range(4):
        assert all(torch.equal(a, b) for a, b in zip(shards[i], old[i]))
    frames, viewpoints = gd.SceneViews(legacy)[(3, (1, 4))]
    assert torch.equal(frames, gd.SceneViews(tmp_path / "shards")[(3, (1, 4))][0])
    batch = next(iter(gd.make_loader(legacy, batch_size=2, max_context=2, seed=0, workers=0)))
    assert batch[0].shape[:1] == (2,) and batch[0].dtype == torch.uint8


@pytest.mark.parametrize("zip_format", [False, True])
def test_torch_gqn_files_with_tensor_cameras_load(tmp_path, torch_gqn_main, zip_format):
    frames, cameras = make_scenes(1)[0]
    save_like_torch_gqn(tmp_path / "0.pt", frames, torch.from_numpy(cameras[None]), gz=False, zip_format=zip_format)
    loaded_frames, loaded_cameras = gd.load_legacy_scene(tmp_path / "0.pt")
    assert loaded_frames == frames
    np.testing.assert_array_equal(loaded_cameras, cameras)


def test_torch_gqn_file_with_wrong_camera_count_is_refused(tmp_path, torch_gqn_main):
    frames, cameras = make_scenes(1)[0]
    save_like_torch_gqn(tmp_path / "0.pt.gz", frames, cameras[None, :4], gz=True)
    with pytest.raises(gd.DatasetError) as error:
        gd.GQNDataset(tmp_path)[0]
    assert "5 frames but cameras of shape (1, 4, 5)" in one_sentence(error, tmp_path / "0.pt.gz")


class RunsCode:
    """Unpickling this runs a shell command: what a crafted scene file would do."""
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_crafted_pickle_is_refused_without_running(tmp_path, writer):
    marker = tmp_path / "marker"
    folder = tmp_path / "data"
    folder.mkdir()
    payload = RunsCode(f"touch {marker}")
    with open(folder / "0.pt", "wb") as f:
        pickle.dump(payload, f) if writer == "pickle" else torch.save(payload, f, _use_new_zipfile_serialization=False)
    with pytest.raises(gd.DatasetError) as error:
        gd.GQNDataset(folder)[0]
    assert "refused" in one_sentence(error, folder / "0.pt")
    with pytest.raises(gd.DatasetError):
        gd.SceneViews(folder)
    assert not marker.exists()
