"""Tests of dataset/convert2torch.py: DeepMind TFRecords (written here with TensorFlow itself) ->
the project's shards, checked frame by frame and camera by camera through gqn_dataset.GQNDataset."""
import io
import os
import struct
import subprocess
import sys
import time
import types

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, encode_jpeg, import_tensorflow, require_tensorflow

tf, TENSORFLOW_MISSING = import_tensorflow()
if TENSORFLOW_MISSING and not os.environ.get("GQN_REQUIRE_TENSORFLOW"):
    pytest.skip(TENSORFLOW_MISSING, allow_module_level=True)


@pytest.fixture(autouse=True)
def tensorflow_required():
    """Under GQN_REQUIRE_TENSORFLOW every test of the converter fails, with the reason, instead of skipping
    (conftest.require_tensorflow)."""
    require_tensorflow()


import gqn_dataset                                   # noqa: E402
from dataset.jpeg import jpeg_info
from dataset.shards import read_shard_header, write_shard
from dataset.viewpoints import raw_to_viewpoint
from dataset import convert2torch                    # noqa: E402



def same_bytes(a, b):
    with open(a, "rb") as f, open(b, "rb") as g:
        return f.read() == g.read()


# ----------------------------------------------------------------------------- DeepMind-format data

def jpeg(rng, size):
    """A small JPEG frame: a few coloured boxes on dark noise."""
    pixels = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
    for _ in range(3):
        y, x = rng.integers(0, size * 3 // 4, 2)
        pixels[y:y + size // 4, x:x + size // 4] = rng.integers(64, 256, 3)
    return encode_jpeg(pixels, quality=90)


def grey_jpeg(size):
    return encode_jpeg(Image.new("L", (size, size), 90))


def make_scene(rng, views, size):
    """(list of `views` JPEG bytes, cameras float32 (views, 5) = x, y, z, yaw, pitch)."""
    frames = [jpeg(rng, size) for _ in range(views)]
    cameras = np.concatenate([rng.uniform(-3, 3, (views, 3)), rng.uniform(0, 2 * np.pi, (views, 1)),
                              rng.uniform(-1.5, 1.5, (views, 1))], axis=1).astype(np.float32)
    return frames, cameras


def example(frames, cameras):
    """One record exactly as DeepMind's files hold it: a tf.train.Example with `frames` and `cameras`."""
    feature = {"frames": tf.train.Feature(bytes_list=tf.train.BytesList(value=list(frames))),
               "cameras": tf.train.Feature(float_list=tf.train.FloatList(value=np.ravel(cameras).tolist()))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_tfrecord(path, records):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


def make_dataset(root, dataset, files, seed=0):
    """Write <root>/<dataset>/<split>/<i>-of-<n>.tfrecord; files = {split: [scenes per file]}.
    Returns {split: [(frames, cameras), ...]} in file order, then record order."""
    info = convert2torch.DATASETS[dataset]
    rng = np.random.default_rng(seed)
    scenes = {}
    for split, counts in files.items():
        scenes[split] = []
        for i, count in enumerate(counts, start=1):
            file_scenes = [make_scene(rng, info.views, info.image_size) for _ in range(count)]
            write_tfrecord(root / dataset / split / f"{i:02d}-of-{len(counts):02d}.tfrecord",
                           [example(*scene) for scene in file_scenes])
            scenes[split].extend(file_scenes)
    return scenes


def convert(root, dataset, out, *extra):
    return convert2torch.main([dataset, "--root", str(root), "--out", str(out), "--workers", "1",
                               "--no_progress", *extra])


def expected_images(frames):
    """What GQNDataset must give for a scene's JPEGs, computed here independently: PIL decode, then
    frames larger than 64 resized to 64x64 bilinear one view at a time (gqn_dataset's documented resize)."""
    images = []
    for data in frames:
        image = Image.open(io.BytesIO(data)).convert("RGB")
        if image.size != (64, 64):
            image = image.resize((64, 64), Image.BILINEAR)
        images.append(np.asarray(image).transpose(2, 0, 1) / np.float32(255))     # (3, 64, 64)
    return np.stack(images)                                                          # (S, 3, 64, 64)


def assert_split_matches(split_dir, scenes, dataset):
    """Every shard header, JPEG byte string, decoded frame and camera of a converted split against the
    source."""
    info = convert2torch.DATASETS[dataset]
    for name in os.listdir(split_dir):
        header = read_shard_header(os.path.join(split_dir, name))
        assert (header["dataset"], header["image_size"], header["views"]) == \
            (dataset, info.image_size, info.views)
        assert header["source"] == f"{int(name[6:11]) + 1:02d}-of-{len(os.listdir(split_dir)):02d}.tfrecord"
    data = gqn_dataset.GQNDataset(split_dir)
    assert len(data) == len(scenes)
    for i, (frames, cameras) in enumerate(scenes):
        assert data.scenes.read(i).jpegs == frames                    # the JPEG bytes are kept as they are
        images, viewpoints = data[i]
        assert tuple(images.shape) == (info.views, 3, 64, 64)         # view axis kept, frames at 64
        np.testing.assert_allclose(images.numpy(), expected_images(frames), atol=1e-6)
        np.testing.assert_allclose(viewpoints.numpy(), raw_to_viewpoint(cameras), rtol=1e-6)


# ----------------------------------------------------------------------------- conversion

def test_64_pixel_dataset_converts_every_file_frame_and_camera(tmp_path):
    scenes = make_dataset(tmp_path / "in", "shepard_metzler_7_parts", {"train": [3, 2], "test": [2]})
    summaries, _ = convert(tmp_path / "in", "shepard_metzler_7_parts", tmp_path / "out")
    assert sorted(os.listdir(tmp_path / "out" / "train")) == ["shard-00000.gqn", "shard-00001.gqn"]
    assert [(s["split"], s["scenes"], s["converted"]) for s in summaries] == [("train", 5, 2), ("test", 2, 1)]
    for split in ("train", "test"):
        assert_split_matches(tmp_path / "out" / split, scenes[split], "shepard_metzler_7_parts")


@pytest.mark.parametrize("dataset", ["rooms_free_camera_with_object_rotations", "mazes"])
def test_big_frames_are_kept_as_jpeg_and_resized_to_64_only_at_load(tmp_path, dataset):
    counts = {"rooms_free_camera_with_object_rotations": [2, 1], "mazes": [1]}[dataset]
    scenes = make_dataset(tmp_path / "in", dataset, {"train": counts})
    convert(tmp_path / "in", dataset, tmp_path / "out", "--splits", "train")
    assert not (tmp_path / "out" / "test").exists()
    assert_split_matches(tmp_path / "out" / "train", scenes["train"], dataset)


def test_default_output_folder_is_dataset_torch_in_the_working_folder(tmp_path, monkeypatch):
    make_dataset(tmp_path, "jaco", {"train": [1], "test": [1]})
    monkeypatch.chdir(tmp_path)
    convert2torch.main(["jaco", "--workers", "1", "--no_progress"])
    assert os.listdir(tmp_path / "jaco-torch" / "train") == ["shard-00000.gqn"]
    assert len(gqn_dataset.GQNDataset(tmp_path / "jaco-torch" / "test")) == 1


def test_parallel_workers_write_the_same_shards_and_report_errors_in_one_sentence(tmp_path, capsys):
    # two runs with worker processes (each starts TensorFlow and torch): all files good, then file 3 holding
    # a bad record; whatever shards the workers write are the in-process ones, byte for byte
    scenes = make_dataset(tmp_path / "in", "rooms_ring_camera", {"train": [2, 3, 2]})
    convert(tmp_path / "in", "rooms_ring_camera", tmp_path / "one", "--splits", "train")
    capsys.readouterr()
    convert(tmp_path / "in", "rooms_ring_camera", tmp_path / "two", "--splits", "train", "--workers", "2")
    summary = capsys.readouterr().out.splitlines()[-1]              # the start-up is told apart from the rate
    assert summary.startswith("total: 7 scenes in ")
    assert " s starting, " in summary and " scenes/s), " in summary
    for name in os.listdir(tmp_path / "one" / "train"):
        assert same_bytes(tmp_path / "one" / "train" / name, tmp_path / "two" / "train" / name)
    bad = tmp_path / "in" / "rooms_ring_camera" / "train" / "03-of-03.tfrecord"
    write_tfrecord(bad, [example(*scenes["train"][5]), example(*[part[:9] for part in scenes["train"][6]])])
    with pytest.raises(SystemExit) as error:
        convert(tmp_path / "in", "rooms_ring_camera", tmp_path / "three", "--splits", "train", "--workers",
                "2")
    assert str(error.value) == (f"convert2torch.py: {bad}: record 1 has 9 frames, but rooms_ring_camera has "
                                f"10 views per scene; the file belongs to another dataset or is damaged.")
    written = sorted(os.listdir(tmp_path / "three" / "train"))
    assert written and set(written) <= {"shard-00000.gqn", "shard-00001.gqn"}
    for name in written:
        assert same_bytes(tmp_path / "one" / "train" / name, tmp_path / "three" / "train" / name)


class StepClock:
    """A stand-in for the converter's clock that moves only when told: each part of a run takes a known
    time."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def test_timing_tells_start_up_and_end_apart_from_the_conversion(tmp_path, monkeypatch):
    # on the converter's clock, warming up (TensorFlow's import and first read) takes 8 s and each file 2 s:
    # the start-up must be the warm-up, the conversion the files, the end nothing (no workers to wait for)
    clock = StepClock()
    monkeypatch.setattr(convert2torch, "time", types.SimpleNamespace(perf_counter=clock.perf_counter,
                                                                     process_time=time.process_time))
    warm_up, convert_file = convert2torch._warm_up, convert2torch.convert_file

    def timed_warm_up():
        warm_up()
        clock.now += 8

    def timed_convert_file(*args, **kwargs):
        result = convert_file(*args, **kwargs)
        clock.now += 2
        return result

    monkeypatch.setattr(convert2torch, "_warm_up", timed_warm_up)
    monkeypatch.setattr(convert2torch, "convert_file", timed_convert_file)
    monkeypatch.setattr(convert2torch, "_warmed_up", False)            # a fresh process
    make_dataset(tmp_path / "in", "jaco", {"train": [2, 1, 1]})
    summaries, timing = convert2torch.convert(tmp_path / "in", "jaco", ["train"], tmp_path / "one", workers=1,
                                              progress=False)
    assert summaries[0]["scenes"] == 4
    assert timing == convert2torch.Timing(seconds=8 + 3 * 2, start_up=8, shut_down=0)
    # the same process again: TensorFlow is warm, so the run starts at once
    summaries, timing = convert2torch.convert(tmp_path / "in", "jaco", ["train"], tmp_path / "two", workers=1,
                                              progress=False)
    assert timing == convert2torch.Timing(seconds=3 * 2, start_up=0, shut_down=0)


def test_reading_without_tensorflows_plain_record_reader_gives_the_same_shards_and_errors(
        tmp_path, monkeypatch):
    # a TensorFlow without tf.compat.v1.io.tf_record_iterator: the converter reads with tf.data instead
    make_dataset(tmp_path / "in", "shepard_metzler_5_parts", {"train": [3, 2]})
    convert(tmp_path / "in", "shepard_metzler_5_parts", tmp_path / "one", "--splits", "train")
    monkeypatch.delattr(tf.compat.v1.io, "tf_record_iterator")
    assert not hasattr(tf.compat.v1.io, "tf_record_iterator")
    convert(tmp_path / "in", "shepard_metzler_5_parts", tmp_path / "two", "--splits", "train")
    for name in os.listdir(tmp_path / "one" / "train"):
        assert same_bytes(tmp_path / "one" / "train" / name, tmp_path / "two" / "train" / name)
    bad = tmp_path / "in" / "shepard_metzler_5_parts" / "train" / "02-of-02.tfrecord"
    flip_byte_in_record_1(bad)
    with pytest.raises(SystemExit, match=r"02-of-02.tfrecord: record 1 is truncated or fails its CRC check"):
        convert(tmp_path / "in", "shepard_metzler_5_parts", tmp_path / "three", "--splits", "train")


# ----------------------------------------------------------------------------- resuming

def test_rerun_skips_finished_shards_and_redoes_the_rest(tmp_path):
    scenes = make_dataset(tmp_path / "in", "shepard_metzler_5_parts", {"train": [2, 2, 1]})
    out = tmp_path / "out" / "train"
    convert(tmp_path / "in", "shepard_metzler_5_parts", tmp_path / "out", "--splits", "train")
    kept = os.stat(out / "shard-00000.gqn")
    os.remove(out / "shard-00001.gqn")                                   # never written
    whole = (out / "shard-00002.gqn").read_bytes()
    (out / "shard-00002.gqn").write_bytes(whole[:len(whole) // 2])      # damaged after the fact
    # an interrupted write_shard's leftover
    stale = out / ".shard-00001.gqn.tmp-999999999"
    stale.write_bytes(b"half a shard")
    summaries, _ = convert(tmp_path / "in", "shepard_metzler_5_parts", tmp_path / "out", "--splits", "train")
    assert (summaries[0]["skipped"], summaries[0]["converted"], summaries[0]["scenes"]) == (1, 2, 3)
    again = os.stat(out / "shard-00000.gqn")
    assert (again.st_ino, again.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)   # not rewritten
    assert (out / "shard-00002.gqn").read_bytes() == whole
    assert sorted(os.listdir(out)) == ["shard-00000.gqn", "shard-00001.gqn", "shard-00002.gqn"]
    assert_split_matches(out, scenes["train"], "shepard_metzler_5_parts")
    summaries, _ = convert(tmp_path / "in", "shepard_metzler_5_parts", tmp_path / "out", "--splits", "train")
    assert (summaries[0]["skipped"], summaries[0]["converted"]) == (3, 0)


def test_a_file_downloaded_again_is_converted_again(tmp_path):
    """A shard records the size of the file it came from: after a cut download was fetched again whole,
    a rerun converts it again instead of keeping the short shard."""
    make_dataset(tmp_path / "in", "shepard_metzler_5_parts", {"train": [2, 3]})
    convert(tmp_path / "in", "shepard_metzler_5_parts", tmp_path / "out", "--splits", "train")
    # 02 is longer now
    scenes = make_dataset(tmp_path / "in", "shepard_metzler_5_parts", {"train": [2, 4]}, seed=1)
    summaries, _ = convert(tmp_path / "in", "shepard_metzler_5_parts", tmp_path / "out", "--splits", "train")
    assert (summaries[0]["skipped"], summaries[0]["converted"], summaries[0]["scenes"]) == (0, 2, 6)
    assert_split_matches(tmp_path / "out" / "train", scenes["train"], "shepard_metzler_5_parts")


def test_output_folder_of_another_dataset_is_refused(tmp_path):
    make_dataset(tmp_path / "in", "rooms_ring_camera", {"train": [1]})
    make_dataset(tmp_path / "in", "rooms_free_camera_no_object_rotations", {"train": [1]})
    convert(tmp_path / "in", "rooms_ring_camera", tmp_path / "out", "--splits", "train")
    with pytest.raises(SystemExit, match="shard-00000.gqn holds rooms_ring_camera from 01-of-01.tfrecord, "
                                         "not rooms_free_camera_no_object_rotations from 01-of-01.tfrecord"):
        convert(tmp_path / "in", "rooms_free_camera_no_object_rotations", tmp_path / "out", "--splits",
                "train")
    # a shard of the same name written by another program (the renderer, say) is neither kept nor overwritten
    frames, cameras = make_scene(np.random.default_rng(1), 10, 64)
    os.makedirs(tmp_path / "other" / "train")
    write_shard(tmp_path / "other" / "train" / "shard-00000.gqn", [frames], cameras[None],
                            extra_header={"dataset": "rooms_ring_camera"})
    with pytest.raises(SystemExit, match="shard-00000.gqn holds scenes not converted by this script"):
        convert(tmp_path / "in", "rooms_ring_camera", tmp_path / "other", "--splits", "train")


# ----------------------------------------------------------------------------- bad input

def record_spans(path):
    """(start, end) byte positions of each record's data in a TFRecord file."""
    data, spans, at = open(path, "rb").read(), [], 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at:at + 8])
        spans.append((at + 12, at + 12 + length))
        at += 12 + length + 4
    return spans


def truncate_in_record_2(path):
    start, end = record_spans(path)[2]
    with open(path, "r+b") as f:
        f.truncate((start + end) // 2)


def cut_inside_the_length_of_record_2(path):
    """A download cut 5 bytes into a record's 8-byte length: TensorFlow's reader takes it for the end."""
    start, _ = record_spans(path)[2]
    with open(path, "r+b") as f:
        f.truncate(start - 12 + 5)


def flip_byte_in_record_1(path):
    start, end = record_spans(path)[1]
    data = bytearray(open(path, "rb").read())
    data[(start + end) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))


def rewrite_record(index, change):
    """A corruption that replaces record `index` by change(frames, cameras) -> (frames, cameras)."""
    def corrupt(path, scenes):
        records = [example(*scene) for scene in scenes]
        records[index] = example(*change(*scenes[index]))
        write_tfrecord(path, records)
    return corrupt


BAD_RECORDS = {
    "truncated file": (lambda path, scenes: truncate_in_record_2(path),
                       "record 2 is truncated or fails its CRC check"),
    "crc failure": (lambda path, scenes: flip_byte_in_record_1(path),
                    "record 1 is truncated or fails its CRC check"),
    "cut inside a length": (lambda path, scenes: cut_inside_the_length_of_record_2(path),
                            "the file ends inside the record after record 1"),
    "too few frames": (rewrite_record(1, lambda f, c: (f[:14], c[:14])),
                       "record 1 has 14 frames, but shepard_metzler_5_parts has 15"),
    "too few cameras": (rewrite_record(2, lambda f, c: (f, c.ravel()[:-1])),
                        "record 2 has 74 camera values, expected 75"),
    "nan camera": (rewrite_record(3, lambda f, c: (f, np.where(np.arange(c.size).reshape(c.shape) == 7,
                                                              np.nan, c))),
                   "record 3 has a camera value that is not finite"),
    # frames: the default structural check (jpeg_info) catches each of these
    "truncated jpeg": (rewrite_record(2, lambda f, c: (f[:3] + [f[3][:len(f[3]) // 2]] + f[4:], c)),
                       "record 2: frame 3 is not a well-formed JPEG: it does not end with the end-of-image "
                       "marker"),
    "not a jpeg": (rewrite_record(0, lambda f, c: ([b"\x89PNG not a jpeg"] + f[1:], c)),
                   "record 0: frame 0 is not a well-formed JPEG: it does not start with the start-of-image "
                   "marker"),
    "damaged jpeg header": (rewrite_record(1, lambda f, c: (f[:2] + [f[2][:4] + b"\xff\xff" + f[2][6:]]
                                                            + f[3:], c)),
                            "record 1: frame 2 is not a well-formed JPEG: its FFE0 segment at byte 2 has the "
                            "length 65535, past the end of the data"),
    "grey frame": (rewrite_record(3, lambda f, c: (f[:7] + [grey_jpeg(64)] + f[8:], c)),
                   "record 3: frame 7 has 1 colour component, not 3 (RGB)"),
    "wrong frame size": (rewrite_record(1, lambda f, c: (f[:5] + [jpeg(np.random.default_rng(0), 84)] + f[6:],
                                                         c)),
                         "record 1: frame 5 is 84x84 pixels but this dataset's frames are 64x64"),
    "not an example": (lambda path, scenes: write_tfrecord(path, [example(*s) for s in scenes[:2]]
                                                           + [b"\x08garbage"]),
                       "record 2 is not a tf.train.Example"),
}


@pytest.mark.parametrize("kind", list(BAD_RECORDS))
def test_bad_record_stops_with_one_sentence_naming_file_and_record(tmp_path, kind):
    scenes = make_dataset(tmp_path / "in", "shepard_metzler_5_parts", {"train": [4, 4]})
    bad = tmp_path / "in" / "shepard_metzler_5_parts" / "train" / "02-of-02.tfrecord"
    corrupt, message = BAD_RECORDS[kind]
    corrupt(bad, scenes["train"][4:])
    with pytest.raises(SystemExit) as error:
        convert(tmp_path / "in", "shepard_metzler_5_parts", tmp_path / "out", "--splits", "train")
    text = str(error.value)
    assert text.startswith("convert2torch.py: ") and "\n" not in text
    assert f"{bad}: {message}" in text, text
    assert os.listdir(tmp_path / "out" / "train") == ["shard-00000.gqn"]     # no shard, no temporary file


def stray_marker_in_image_data(data):
    """JPEG bytes with a start-of-image marker FFD8 written into the middle of the entropy-coded image
    data: the headers and the end marker are intact, so only a decoder notices (PIL refuses it)."""
    at = 2
    while data[at + 1] != 0xDA:                                          # walk the segments to SOS
        at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
    middle = (at + len(data)) // 2
    return data[:middle] + b"\xff\xd8" + data[middle + 2:]


def test_full_check_catches_damaged_image_data_that_the_default_check_lets_through(tmp_path):
    scenes = make_dataset(tmp_path / "in", "shepard_metzler_5_parts", {"train": [3]})
    bad = tmp_path / "in" / "shepard_metzler_5_parts" / "train" / "01-of-01.tfrecord"
    damage = rewrite_record(1, lambda f, c: (f[:4] + [stray_marker_in_image_data(f[4])] + f[5:], c))
    damage(bad, scenes["train"])
    with pytest.raises(SystemExit) as error:
        convert(tmp_path / "in", "shepard_metzler_5_parts", tmp_path / "full", "--splits", "train",
                "--full_check")
    assert str(error.value).startswith(f"convert2torch.py: {bad}: record 1: frame 4 does not decode as a "
                                       f"JPEG (")
    assert "\n" not in str(error.value) and os.listdir(tmp_path / "full" / "train") == []
    # the default check passes it (the structure is intact); the loader then refuses that scene alone
    summaries, _ = convert(tmp_path / "in", "shepard_metzler_5_parts", tmp_path / "out", "--splits", "train")
    assert summaries[0]["scenes"] == 3
    data = gqn_dataset.GQNDataset(tmp_path / "out" / "train")
    data[0], data[2]
    with pytest.raises(gqn_dataset.DatasetError,
                       match=r"shard-00000.gqn scene 1 view 4 is not a readable JPEG"):
        data[1]


def test_structural_check_reads_tensorflow_encoded_frames():
    # the same walk over the markers on frames from TensorFlow's own JPEG encoder, as DeepMind's may be
    rng = np.random.default_rng(0)
    for size in (64, 84, 128):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        for progressive in (False, True):
            data = tf.io.encode_jpeg(pixels, quality=90, progressive=progressive).numpy()
            assert jpeg_info(data, "frame") == (size, size, 3)
            convert2torch.check_frame(data, size, "frame", full_check=True)
            with pytest.raises(convert2torch.ConversionError, match="frame is not a well-formed JPEG"):
                convert2torch.check_frame(data[:-1], size, "frame")


def test_missing_input_folder_and_misnamed_files_are_one_sentence(tmp_path):
    with pytest.raises(SystemExit, match=r"jaco[/\\]train is not a folder; pass --root"):
        convert(tmp_path, "jaco", tmp_path / "out")
    write_tfrecord(tmp_path / "jaco" / "train" / "part.tfrecord", [])
    with pytest.raises(SystemExit, match=r"part.tfrecord is not named <i>-of-<n>.tfrecord"):
        convert(tmp_path, "jaco", tmp_path / "out", "--splits", "train")


def test_cli_unknown_dataset_is_a_one_line_error():
    result = subprocess.run([sys.executable, "dataset/convert2torch.py", "shepard_metzler_6_parts"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "unknown dataset 'shepard_metzler_6_parts'" in lines[0] and "shepard_metzler_5_parts" in lines[0]


def test_every_table_dataset_is_known_with_its_frame_size_and_views():
    table = {name: (info.image_size, info.views) for name, info in convert2torch.DATASETS.items()}
    assert table == {"jaco": (64, 11), "mazes": (84, 300),
                     "rooms_free_camera_with_object_rotations": (128, 10), "rooms_ring_camera": (64, 10),
                     "rooms_free_camera_no_object_rotations": (64, 10), "shepard_metzler_5_parts": (64, 15),
                     "shepard_metzler_7_parts": (64, 15)}
    assert convert2torch.shard_name("0001-of-0900.tfrecord") == "shard-00000.gqn"
    assert convert2torch.shard_name("900-of-900.tfrecord") == "shard-00899.gqn"
