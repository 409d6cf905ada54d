"""What the tests share: the repository's root, the tiny model's flags, a JPEG encoder, a crafted pickle,
the TensorFlow guard, tiny scene folders in the project's shard format, and the built-in scenes of seed 0."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from dataset.shards import read_shard_header, write_split

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the repository: train.py, assets/, ...

# The tiny GQN the tests train (pool, L 2, h 8, r 16; batch 4, no DataLoader workers, no final evaluation);
# each test adds its own seed, intervals and data.
TINY_MODEL = ["--layers", "2", "--h_dim", "8", "--r_dim", "16", "--batch_size", "4", "--workers", "0",
              "--eval_scenes", "0"]


def encode_jpeg(image, **options):
    """A PIL image or a uint8 (H, W, 3) array -> JPEG bytes (Pillow's defaults unless options say)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    out = io.BytesIO()
    image.save(out, format="JPEG", **options)
    return out.getvalue()


class RunsCode:
    """Unpickling this runs a shell command: what a crafted checkpoint or scene file would do."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def import_tensorflow():
    """(tensorflow, None), or (None, why it does not import): a broken install may raise anything."""
    try:
        import tensorflow
    except (Exception, SystemExit) as err:
        return None, (f"TensorFlow does not import ({type(err).__name__}: {err}); "
                      f"install it with pip install -r requirements-dev.txt")
    return tensorflow, None


def require_tensorflow():
    """TensorFlow for a test that needs it; without it the test skips, naming the import error, except
    under GQN_REQUIRE_TENSORFLOW (.ci/run sets it: the test command installs TensorFlow), where it fails."""
    tf, missing = import_tensorflow()
    if missing and os.environ.get("GQN_REQUIRE_TENSORFLOW"):
        pytest.fail(f"GQN_REQUIRE_TENSORFLOW is set but {missing}", pytrace=False)
    if missing:
        pytest.skip(missing)
    return tf


def short_preset_run(preset, tmp_path):
    """train.py --preset PRESET, shortened (8 training and 4 test scenes rendered under tmp_path, 2 steps of
    batch 2, 4 scenes scored) -> its last checkpoint's state and its final.json."""
    import json

    import checkpoint
    import train
    run_dir = tmp_path / "runs" / "run"
    steps = train.train(train.parse_args([
        "--preset", preset, "--data_root", str(tmp_path / "data"), "--builtin_train_scenes", "8",
        "--builtin_test_scenes", "4", "--eval_scenes", "4", "--gradient_steps", "2", "--batch_size", "2",
        "--workers", "0", "--log_interval", "2", "--root_log_dir", str(tmp_path / "runs"),
        "--log_dir", "run"]))
    assert steps == 2
    with open(run_dir / "final.json") as f:
        return checkpoint.load(checkpoint.latest(run_dir / "checkpoints")), json.load(f)


def write_random_split(folder, scenes=12, views=6, size=64, seed=0, scenes_per_shard=5):
    """Write `scenes` random scenes (blobs of colour on black, random cameras) as a split folder."""
    rng = np.random.default_rng(seed)

    def jpeg(image):
        return encode_jpeg(image, quality=90)

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
        "--log_dir", "tiny", *TINY_MODEL, "--seed", "3", "--gradient_steps", "2", "--log_interval", "2"]))
    return checkpoint.latest(root / "tiny" / "checkpoints")


# The built-in scenes of seed 0 that the learning tests train on and the shipped checkpoints were measured on:
# scene i of a split depends only on the seed, the split and i, so the first 32 of these test scenes are the
# ones tests/shipped_*_eval.json record.
SEED0_SCENES = {"sm5": dict(train=400, test=48), "rooms": dict(train=400, test=48)}


@pytest.fixture(scope="session")
def seed0_scenes(tmp_path_factory):
    """scenes(kind, splits=("train", "test")) -> (train_dir, test_dir) of the built-in scenes of seed 0 (kind
    "sm5": Shepard-Metzler objects of 5 cubes; "rooms": the rooms), rendered once per test session and a
    split only when a test first asks for it (splits=("test",): the test split alone)."""
    from dataset.rooms import ensure_builtin_rooms
    from dataset.shepard_metzler import ensure_builtin_dataset
    root = tmp_path_factory.mktemp("seed0")

    def scenes(kind, splits=("train", "test")):
        n = SEED0_SCENES[kind]
        if kind == "rooms":
            return ensure_builtin_rooms(str(root / kind), n["train"], n["test"], seed=0, workers=1,
                                        progress=False, splits=splits)
        return ensure_builtin_dataset(str(root / kind), parts=5, train_scenes=n["train"],
                                      test_scenes=n["test"], seed=0, workers=1, progress=False, splits=splits)
    return scenes
