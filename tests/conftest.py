"""Shared test fixtures: tiny scene folders in the project's shard format."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from dataset.shards import read_shard_header, write_split


def write_random_split(folder, scenes=12, views=6, size=64, seed=0, scenes_per_shard=5):
    """Write `scenes` random scenes (blobs of colour on black, random cameras) as a split folder."""
    rng = np.random.default_rng(seed)

    def jpeg(image):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=90)
        return buffer.getvalue()

    def scene():
        frames = []
        for _ in range(views):
            image = np.zeros((size, size, 3), np.uint8)
            y, x = rng.integers(8, size - 24, 2)
            image[y:y + 16, x:x + 16] = rng.integers(64, 256, 3)
            frames.append(jpeg(image))
        position = rng.normal(size=(views, 3))
        position *= 3.333 / np.linalg.norm(position, axis=1, keepdims=True)
        yaw = np.mod(-np.arctan2(-position[:, 1], -position[:, 0]), 2 * np.pi)
        pitch = np.arcsin(-position[:, 2] / 3.333)
        cameras = np.concatenate([position, yaw[:, None], pitch[:, None]], axis=1).astype(np.float32)
        return frames, cameras

    write_split(str(folder), (scene() for _ in range(scenes)), scenes_per_shard=scenes_per_shard)
    return str(folder)


def corrupt_one_frame(split_dir, scene=0, view=0):
    """Overwrite the start (the JPEG SOI marker) of one frame inside a shard."""
    shard = sorted(p for p in os.listdir(split_dir) if p.endswith(".gqn"))[0]
    path = os.path.join(split_dir, shard)
    header = read_shard_header(path)
    with open(path, "r+b") as f:
        f.seek(header["offsets_offset"] + 8 * (scene * header["views"] + view))
        offset = int.from_bytes(f.read(8), "little")
        f.seek(header["blob_offset"] + offset)
        f.write(b"\0\0\0\0")
    return path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """(train_dir, test_dir) of tiny random scenes, written once per test session."""
    root = tmp_path_factory.mktemp("tiny_data")
    return (write_random_split(root / "train", scenes=12, seed=1),
            write_random_split(root / "test", scenes=8, seed=2))


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_data, tmp_path_factory):
    """A 2-step checkpoint of a tiny GQN (L 2, h 8, r 16) trained on tiny_data's train split."""
    import checkpoint
    import train
    train_dir, test_dir = tiny_data
    root = tmp_path_factory.mktemp("tiny_runs")
    train.train(train.parse_args([
        "--train_data_dir", train_dir, "--test_data_dir", test_dir, "--root_log_dir", str(root),
        "--log_dir", "tiny", "--layers", "2", "--h_dim", "8", "--r_dim", "16", "--batch_size", "4",
        "--workers", "0", "--eval_scenes", "0", "--seed", "3", "--gradient_steps", "2", "--log_interval", "2"]))
    return checkpoint.latest(root / "tiny" / "checkpoints")
