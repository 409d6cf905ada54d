"""dataset/legacy.py: folders converted by the original torch-gqn, read without running their pickles."""
import collections
import gzip
import pickle
import sys

import numpy as np
import pytest
import torch

import gqn_dataset as gd
from conftest import RunsCode
from dataset.errors import DatasetError
from dataset.legacy import load_legacy_scene
from dataset.shards import write_split
from scene_files import make_scenes, one_sentence


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
    write_split(tmp_path / "shards", scenes)
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
    save_like_torch_gqn(tmp_path / "0.pt", frames, torch.from_numpy(cameras[None]), gz=False,
                        zip_format=zip_format)
    loaded_frames, loaded_cameras = load_legacy_scene(tmp_path / "0.pt")
    assert loaded_frames == frames
    np.testing.assert_array_equal(loaded_cameras, cameras)


def test_torch_gqn_file_with_wrong_camera_count_is_refused(tmp_path, torch_gqn_main):
    frames, cameras = make_scenes(1)[0]
    save_like_torch_gqn(tmp_path / "0.pt.gz", frames, cameras[None, :4], gz=True)
    with pytest.raises(DatasetError) as error:
        gd.GQNDataset(tmp_path)[0]
    assert "5 frames but cameras of shape (1, 4, 5)" in one_sentence(error, tmp_path / "0.pt.gz")


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_crafted_pickle_is_refused_without_running(tmp_path, writer):
    marker = tmp_path / "marker"
    folder = tmp_path / "data"
    folder.mkdir()
    payload = RunsCode(f"touch {marker}")
    with open(folder / "0.pt", "wb") as f:
        if writer == "pickle":
            pickle.dump(payload, f)
        else:
            torch.save(payload, f, _use_new_zipfile_serialization=False)
    with pytest.raises(DatasetError) as error:
        gd.GQNDataset(folder)[0]
    assert "refused" in one_sentence(error, folder / "0.pt")
    with pytest.raises(DatasetError):
        gd.SceneViews(folder)
    assert not marker.exists()
