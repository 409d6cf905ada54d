"""dataset/shards.py: the shard format's round trip, its checks, and bad shards named in one sentence."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

import gqn_dataset as gd
from dataset.errors import DatasetError
from dataset.jpeg import decode_views
from dataset.shards import read_shard_header, view_checksum, write_shard, write_split
from scene_files import encode, make_scenes, noise, one_sentence, pil_decode


def test_shard_round_trip_keeps_frames_and_cameras(tmp_path):
    scenes = make_scenes(7)
    assert write_split(tmp_path, scenes, scenes_per_shard=3) == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-00000.gqn", "shard-00001.gqn",
                                                          "shard-00002.gqn"]
    header = read_shard_header(tmp_path / "shard-00002.gqn")
    assert (header["scenes"], header["views"], header["image_size"], header["camera"]) == \
        (1, 5, 64, "x y z yaw pitch")
    folder = gd.open_split(tmp_path)
    assert len(folder) == 7
    for i in [6, 0, 4]:                                           # random access, last scene first
        raw = folder.read(i)
        assert raw.jpegs == scenes[i][0]                          # bytes kept exactly as encoded
        np.testing.assert_array_equal(raw.cameras, scenes[i][1])
        frames = decode_views(raw)
        assert frames.shape == (5, 64, 64, 3) and frames.dtype == np.uint8
        for v in range(5):
            np.testing.assert_array_equal(frames[v], pil_decode(scenes[i][0][v]))
    raw = folder.read(3, views=[4, 1])
    assert raw.jpegs == [scenes[3][0][4], scenes[3][0][1]]
    np.testing.assert_array_equal(raw.cameras, scenes[3][1][[4, 1]])


def test_write_shard_refuses_malformed_non_square_and_mixed_frames_naming_scene_and_view(tmp_path):
    scenes = make_scenes(3, views=4)
    frames, cameras = [list(f) for f, _ in scenes], np.stack([c for _, c in scenes])
    path = tmp_path / "shard-00000.gqn"
    for bad, message in [(frames[2][1][:-30],
                          "scene 2 view 1 is not a well-formed JPEG: it does not end with"),
                         (b"GIF89a", "scene 2 view 1 is not a well-formed JPEG: it does not start with"),
                         ("text", "scene 2 view 1 is a str, not JPEG bytes"),
                         (encode(Image.new("RGB", (96, 64))),
                          "scene 2 view 1 is a 96x64 JPEG; frames must be square"),
                         (encode(noise(48)), "scene 2 view 1 is a 48x48 JPEG; frames must be square JPEGs of "
                                             "at least 64"),
                         (encode(noise(84)), "its frames have several sizes [64, 84]")]:
        with pytest.raises(DatasetError) as error:
            write_shard(path, frames[:2] + [frames[2][:1] + [bad] + frames[2][2:]], cameras)
        assert message in one_sentence(error, path)
        assert not list(tmp_path.iterdir())                               # nothing written
    # grey frames are kept (loaded as RGB)
    grey = encode(noise(64, "L"))
    write_shard(path, frames[:2] + [[bytearray(grey), memoryview(grey)] + frames[2][2:]], cameras)
    raw = gd.open_split(tmp_path).read(2)
    assert raw.jpegs[:2] == [grey, grey] and raw.jpegs[2:] == frames[2][2:]
    assert read_shard_header(path)["image_size"] == 64


def test_large_frames_are_resized_view_by_view(tmp_path):
    scenes = make_scenes(2, views=4, size=84)
    write_split(tmp_path, scenes)
    frames = decode_views(gd.open_split(tmp_path).read(1))
    assert frames.shape == (4, 64, 64, 3)
    for v in range(4):                                           # each view is its own source, resized
        source = Image.open(io.BytesIO(scenes[1][0][v])).convert("RGB").resize((64, 64), Image.BILINEAR)
        np.testing.assert_array_equal(frames[v], np.asarray(source))


# --- bad input: one clear sentence naming the file --------------------------------------------

def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DatasetError) as error:
        gd.GQNDataset(tmp_path / "nope")
    assert "does not exist" in one_sentence(error, tmp_path / "nope")
    with pytest.raises(DatasetError) as error:
        gd.GQNDataset(tmp_path)
    assert "no shard-*.gqn files" in one_sentence(error, tmp_path)
    write_split(tmp_path / "train", make_scenes(1))
    with pytest.raises(DatasetError) as error:
        gd.make_loader(tmp_path, 1, 1, seed=0, workers=0)
    assert "train" in one_sentence(error, tmp_path)                      # points at the split folder


def test_a_folder_of_tfrecords_or_of_anything_else_says_what_to_do(tmp_path):
    (tmp_path / "tf").mkdir()
    (tmp_path / "tf" / "001-of-010.tfrecord").write_bytes(b"")
    with pytest.raises(DatasetError) as error:
        gd.GQNDataset(tmp_path / "tf")
    assert "but TFRecord files (convert them to shards first)" in one_sentence(error, tmp_path / "tf")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "scene0.png").write_bytes(b"")
    with pytest.raises(DatasetError) as error:
        gd.GQNDataset(tmp_path / "other")
    assert "pass a split folder written by the converter" in one_sentence(error, tmp_path / "other")


@pytest.mark.parametrize("damage", ["magic", "json", "truncated"])
def test_corrupt_shard_header_is_refused_when_opening(tmp_path, damage):
    write_split(tmp_path, make_scenes(2))
    shard = tmp_path / "shard-00000.gqn"
    data = bytearray(shard.read_bytes())
    if damage == "magic":
        data[:8] = b"NOTASHRD"
    elif damage == "json":
        data[16:18] = b"]]"
    else:
        del data[-10:]
    shard.write_bytes(bytes(data))
    with pytest.raises(DatasetError) as error:
        gd.GQNDataset(tmp_path)
    assert "not a valid GQN shard" in one_sentence(error, shard)


def patch(shard, offset, new):
    data = bytearray(shard.read_bytes())
    data[offset:offset + len(new)] = new
    shard.write_bytes(bytes(data))


def test_corrupt_jpeg_names_shard_scene_and_view(tmp_path):
    scenes = make_scenes(3)
    write_split(tmp_path, scenes)
    shard = tmp_path / "shard-00000.gqn"
    header = read_shard_header(shard)
    start = header["blob_offset"] + sum(len(f) for f in scenes[0][0]) + sum(len(f) for f in scenes[1][0][:2])
    zeros = bytes(len(scenes[1][0][2]))
    patch(shard, start, zeros)                                           # scene 1 view 2 -> zeros
    # ... as if written so (the checksum agrees): the decoder, not the checksum, finds it
    view = 1 * 5 + 2
    camera = np.asarray(scenes[1][1][2], "<f4").tobytes()
    patch(shard, header["checksums_offset"] + 4 * view,
          np.array([view_checksum(camera, zeros)], "<u4").tobytes())
    dataset = gd.GQNDataset(tmp_path)
    dataset[0]
    with pytest.raises(DatasetError) as error:
        dataset[1]
    assert "scene 1 view 2 is not a readable JPEG" in one_sentence(error, shard)
    gd.SceneViews(tmp_path)[(1, (0, 1))]                                 # other views still decode


def test_damaged_frames_and_cameras_are_refused_by_their_checksums_naming_shard_scene_and_view(tmp_path):
    scenes = make_scenes(4, views=5)
    write_split(tmp_path, scenes)
    shard = tmp_path / "shard-00000.gqn"
    header = read_shard_header(shard)
    assert header["checksums_offset"] is not None
    # a run of zeros in the middle of the image data (a disk's damage): the frame still parses as a JPEG
    lengths = [len(f) for frames, _ in scenes for f in frames]
    view = 2 * 5 + 3                                                     # scene 2 view 3
    start = header["blob_offset"] + sum(lengths[:view]) + lengths[view] // 2
    patch(shard, start, bytes(min(64, lengths[view] // 4)))
    with pytest.raises(DatasetError) as error:
        gd.SceneViews(tmp_path)[(2, (0, 3))]
    assert "scene 2 view 3 does not match its checksum (CRC32)" in one_sentence(error, shard)
    gd.SceneViews(tmp_path)[(2, (0, 1, 2, 4))]                           # its other views still read
    # one camera number changed (still finite): refused too
    patch(shard, header["cameras_offset"] + (1 * 5 + 4) * 20, np.array([9.5], "<f4").tobytes())
    with pytest.raises(DatasetError) as error:
        gd.GQNDataset(tmp_path)[1]
    assert "scene 1 view 4 does not match its checksum" in one_sentence(error, shard)


def test_first_version_shards_without_checksums_still_read(tmp_path):
    """A shard written before checksums (magic GQNSHRD1: the same layout without the checksum table)."""
    scenes = make_scenes(3, views=4)
    write_split(tmp_path / "new", scenes)
    new = (tmp_path / "new" / "shard-00000.gqn").read_bytes()
    header = read_shard_header(tmp_path / "new" / "shard-00000.gqn")
    old = b"GQNSHRD1" + new[8:header["checksums_offset"]] + new[header["blob_offset"]:]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "shard-00000.gqn").write_bytes(old)
    assert read_shard_header(tmp_path / "old" / "shard-00000.gqn")["checksums_offset"] is None
    for i in range(3):
        a, b = gd.GQNDataset(tmp_path / "old")[i], gd.GQNDataset(tmp_path / "new")[i]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_nan_cameras_are_refused_on_write_and_on_read(tmp_path):
    frames, cameras = zip(*make_scenes(2))
    bad = np.stack(cameras)
    bad[1, 3, 4] = np.nan
    with pytest.raises(DatasetError) as error:
        write_shard(tmp_path / "shard-00000.gqn", list(frames), bad)
    assert "scene 1 hold NaN or inf" in one_sentence(error, tmp_path / "shard-00000.gqn")
    assert not list(tmp_path.iterdir())                                  # nothing half written
    write_shard(tmp_path / "shard-00000.gqn", list(frames), np.stack(cameras))
    shard = tmp_path / "shard-00000.gqn"
    header = read_shard_header(shard)
    patch(shard, header["cameras_offset"] + (5 + 3) * 20 + 12, np.float32(np.inf).tobytes())
    with pytest.raises(DatasetError) as error:
        gd.GQNDataset(tmp_path)[1]
    assert "scene 1 has NaN or inf cameras" in one_sentence(error, shard)


def test_writing_into_a_missing_folder_is_one_sentence(tmp_path):
    frames, cameras = zip(*make_scenes(1))
    path = tmp_path / "nope" / "shard-00000.gqn"
    with pytest.raises(DatasetError) as error:
        write_shard(path, list(frames), np.stack(cameras))
    one_sentence(error, path)


def test_wrong_number_of_cameras_or_frames_is_refused(tmp_path):
    frames, cameras = zip(*make_scenes(2))
    path = tmp_path / "shard-00000.gqn"
    with pytest.raises(DatasetError) as error:
        write_shard(path, list(frames), np.stack(cameras)[:, :4])
    assert "cameras of shape (n, S, 5)" in one_sentence(error, path)
    with pytest.raises(DatasetError) as error:
        write_shard(path, [frames[0], frames[1][:4]], np.stack(cameras))
    one_sentence(error, path)
    with pytest.raises(DatasetError) as error:
        write_split(tmp_path, [(frames[0], cameras[0][:3])])
    one_sentence(error, tmp_path)


def test_frames_of_another_size_than_the_header_says_are_refused(tmp_path):
    write_split(tmp_path, make_scenes(2))
    shard = tmp_path / "shard-00000.gqn"
    data = shard.read_bytes()
    patch(shard, data.index(b'"image_size": 64'), b'"image_size": 96')
    with pytest.raises(DatasetError) as error:
        gd.GQNDataset(tmp_path)[0]
    assert "view 0 is 64x64 but should be 96x96" in one_sentence(error, shard)


def test_shards_of_different_view_counts_are_refused(tmp_path):
    write_split(tmp_path, make_scenes(2, views=5))
    write_split(tmp_path, make_scenes(2, views=4), start_shard=1)
    with pytest.raises(DatasetError) as error:
        gd.SceneViews(tmp_path)
    one_sentence(error, tmp_path / "shard-00001.gqn")
