"""GQN scene data for training: a split folder's datasets, the context samplers and the loaders.

The files of a split are read by the data package: dataset/shards.py (the project's shard format),
dataset/legacy.py (torch-gqn's folders), dataset/jpeg.py (decoding frames), dataset/viewpoints.py.

Reading a split
---------------
    GQNDataset(root)[i] -> (images float32 (S, 3, 64, 64) in [0, 1], viewpoints float32 (S, 7))
        torch-gqn's contract: all views of scene i.
    make_loader(root, batch_size, max_context, seed, workers, start_batch=step) -> endless batches
        (frames uint8 (B, M+1, 3, 64, 64), viewpoints float32 (B, M+1, 7), bad), the last view the
        query (bad: the scenes that failed their checks, left out; 0 for a good batch; its .messages):
            for frames, viewpoints, bad in loader:
                x = frames.to(device).float() / 255           # uint8 travels, 4x less than float
                x_c, v_c, x_q, v_q = x[:, :-1], viewpoints[:, :-1], x[:, -1], viewpoints[:, -1]
        SceneViews decodes only the sampled views; ContextBatchSampler makes batch k a pure function
        of (seed, k), so any number of workers gives the same batches and start_batch=k resumes.
    make_eval_loader(root, num_scenes, batch_size, num_context, seed) -> the same, finite, with a fixed
        context count over the first num_scenes scenes (FixedContextSampler).
Labels of a split (the built-in rooms' test split has them; DeepMind's data has none)
-----------------------------------------------------------------------------------
    open_labels(root) -> None for a split without label files, else a SceneLabels:
        labels.view(scene, view) -> uint8 (64, 64): 0 sky, 1 wall, 2 floor, 3 + k object k
        labels.scene(scene) -> uint8 (S, 64, 64); scene and view indices as GQNDataset's.
    The file format is documented in dataset/labels.py; region metrics are left out when it is None.
Mistakes in data or settings raise DatasetError, whose message is one sentence naming the file
(and scene and view) and the fix.
"""

import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dataset.errors import DatasetError
from dataset.jpeg import decode_views
from dataset.labels import (FIRST_OBJECT, FLOOR, SKY, WALL, SceneLabels,  # noqa: F401 (the labels API)
                            open_labels)
from dataset.legacy import LEGACY_PATTERN, LegacyFolder
from dataset.shards import SHARD_PATTERN, ShardFolder
from dataset.viewpoints import raw_to_viewpoint
from runtime import BATCH_STREAM, EVAL_STREAM, ORDER_STREAM, generator


def open_split(root_dir):
    """A split folder -> its scene reader: a ShardFolder for shard-*.gqn files, a LegacyFolder for torch-gqn's
    {i}.pt.gz / {i}.pt files; one clear error for each way the folder can be wrong."""
    root_dir = os.fspath(root_dir)
    if not os.path.isdir(root_dir):
        raise DatasetError(f"data folder {root_dir} does not exist; pass the folder that holds a split's "
                           f"shard-*.gqn files (e.g. DIR/train).")
    names = os.listdir(root_dir)
    shards = sorted((int(m[1]), name) for name in names if (m := SHARD_PATTERN.fullmatch(name)))
    legacy = sorted((int(m[1]), name) for name in names if (m := LEGACY_PATTERN.fullmatch(name)))
    if shards and legacy:
        raise DatasetError(f"data folder {root_dir} holds both shard-*.gqn files and torch-gqn .pt files; "
                           f"keep one kind per folder.")
    if shards:
        return ShardFolder([os.path.join(root_dir, name) for _, name in shards])
    if legacy:
        numbers = [number for number, _ in legacy]
        twice = sorted({n for n in numbers if numbers.count(n) > 1})
        if twice:
            raise DatasetError(f"data folder {root_dir} holds scene {twice[0]} twice ({twice[0]}.pt and "
                               f"{twice[0]}.pt.gz); delete one of them.")
        return LegacyFolder([os.path.join(root_dir, name) for _, name in legacy])
    raise DatasetError(f"data folder {root_dir} holds no shard-*.gqn files and no torch-gqn "
                       f"{{i}}.pt(.gz) files"
                       f"{_folder_hint(root_dir, names)}; "
                       f"pass a split folder written by the converter (e.g. DIR/train).")


def _folder_hint(root_dir, names):
    """A few words on what a folder without scenes holds instead, for its error message."""
    def holds_scenes(folder):
        try:
            return any(SHARD_PATTERN.fullmatch(n) or LEGACY_PATTERN.fullmatch(n) for n in os.listdir(folder))
        except OSError:
            return False

    splits = sorted(name for name in names if os.path.isdir(os.path.join(root_dir, name))
                    and holds_scenes(os.path.join(root_dir, name)))
    if splits:
        return f" but its subfolders {', '.join(splits)} do (pass one of them)"
    if any(name.endswith(".tfrecord") for name in names):
        return " but TFRecord files (convert them to shards first)"
    return " (it is empty)" if not names else ""


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------

class GQNDataset(Dataset):
    """The original torch-gqn dataset over a split folder (shards, or torch-gqn's .pt(.gz) files):
    item i = (images float32 (S, 3, 64, 64) in [0, 1], viewpoints float32 (S, 7)), all views of scene i.
    Unlike torch-gqn, the viewpoints are already 7-d (project order); `transform` gets the images,
    `target_transform` the 7-d viewpoints."""

    def __init__(self, root_dir, transform=None, target_transform=None):
        self.root_dir = os.fspath(root_dir)
        self.scenes = open_split(root_dir)                    # reads shard headers only
        self.transform, self.target_transform = transform, target_transform

    def __len__(self):
        return len(self.scenes)

    @property
    def num_views(self):
        return self.scenes.num_views

    def __getitem__(self, index):
        raw = self.scenes.read(index)
        # (S, 64, 64, 3) -> (S, 3, 64, 64)
        frames = np.ascontiguousarray(decode_views(raw).transpose(0, 3, 1, 2))
        images = torch.from_numpy(np.divide(frames, 255, dtype=np.float32))      # in [0, 1]
        viewpoints = torch.from_numpy(raw_to_viewpoint(raw.cameras))          # (S, 5) -> (S, 7)
        if self.transform:
            images = self.transform(images)
        if self.target_transform:
            viewpoints = self.target_transform(viewpoints)
        return images, viewpoints


class SceneViews(Dataset):
    """The training path's dataset: key (scene_index, view_indices) -> (frames uint8 (V, 3, 64, 64),
    viewpoints float32 (V, 7)) of only those views, in that order; only those frames are decoded."""

    def __init__(self, root_dir, report_bad_scenes=False):
        self.root_dir = os.fspath(root_dir)
        self.scenes = open_split(root_dir)
        self.num_views = self.scenes.num_views
        self.report_bad_scenes = report_bad_scenes

    def __len__(self):
        return len(self.scenes)

    def __getitem__(self, key):
        """With report_bad_scenes, a scene that fails its checks gives its one-sentence message (a str)
        instead of raising (collate_views gathers them), so the loop, not a worker, decides what to do."""
        try:
            return self._read(key)
        except DatasetError as e:
            if self.report_bad_scenes:
                return str(e)
            raise

    def _read(self, key):
        index, views = key
        raw = self.scenes.read(index, views)
        # the layout change is done by numpy, far cheaper than torch's strided uint8 copy on small tensors
        # (V, 64, 64, 3) -> (V, 3, 64, 64)
        frames = np.ascontiguousarray(decode_views(raw).transpose(0, 3, 1, 2))
        return torch.from_numpy(frames), torch.from_numpy(raw_to_viewpoint(raw.cameras))   # (V, 7)


# ---------------------------------------------------------------------------------------------
# Sampling context and query views (paper, Algorithm S1)
# ---------------------------------------------------------------------------------------------

_CONTEXT_COUNTS = {"shepard-metzler": 15, "room": 5, "jaco": 7, "labyrinth": 20}   # K per dataset (spec 2)


def context_count_for_dataset(name):
    """torch-gqn's --dataset name (Shepard-Metzler | Room | Jaco | Labyrinth, any case) -> the largest
    context count K of the paper for that kind of data."""
    key = str(name).lower()
    if key not in _CONTEXT_COUNTS:
        raise DatasetError(f"unknown dataset {name!r}; pass one of Shepard-Metzler, Room, Jaco, Labyrinth.")
    return _CONTEXT_COUNTS[key]


def _check_sampler_args(num_scenes, num_views, batch_size, context, seed, rank, world_size, what):
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DatasetError(f"seed is {seed!r}; pass an integer seed of 0 or more.")
    if not 1 <= batch_size <= num_scenes:
        raise DatasetError(f"batch size {batch_size} does not fit {num_scenes} scenes; pass a batch size "
                           f"between 1 and the number of scenes.")
    if not 1 <= context < num_views:
        raise DatasetError(f"{what} {context} needs {context + 1} views per scene (context and query) "
                           f"but the scenes have {num_views}; pass a {what} between 1 and {num_views - 1}.")
    if world_size < 1 or not 0 <= rank < world_size or batch_size % world_size:
        raise DatasetError(f"batch size {batch_size} cannot be split over {world_size} processes as rank "
                           f"{rank}; pass a batch size divisible by the world size "
                           f"and 0 <= rank < world size.")


def _keys(scenes, views):
    """scenes (B,), views (B, V) -> DataLoader keys [(scene_index, view_indices_tuple)]."""
    return [(int(s), tuple(int(v) for v in vs)) for s, vs in zip(scenes, views)]


class ContextBatchSampler:
    """Infinite batch sampler for DataLoader(batch_sampler=...): each batch is a list of keys
    (scene_index, view_indices) for SceneViews, M context views then the query view.

    Global batch k is a pure function of (seed, k): epoch = k // (num_scenes // batch_size) (the last
    partial batch of an epoch is dropped); the scenes come from a permutation drawn from (seed, epoch);
    a generator seeded from (seed, k) draws M ~ Uniform{min_context..max_context} (paper: min_context 1)
    and, per scene, M + 1 distinct views: the query is never a context view, and M is the same on every
    rank. Rank r of world_size yields its contiguous slice of the global batch. To resume at step t,
    construct with start_batch=t."""

    def __init__(self, num_scenes, num_views, batch_size, max_context, seed, rank=0, world_size=1,
                 start_batch=0, min_context=1):
        _check_sampler_args(num_scenes, num_views, batch_size, max_context, seed, rank, world_size,
                            "max_context")
        if not 1 <= min_context <= max_context:
            raise DatasetError(f"the least context count {min_context} is not between 1 and the most, "
                               f"{max_context}; pass a min_context in that range.")
        self.num_scenes, self.num_views, self.batch_size = num_scenes, num_views, batch_size
        if start_batch < 0:
            raise DatasetError(f"start_batch is {start_batch}; pass the step to resume from, 0 or more.")
        self.max_context, self.seed, self.start_batch = max_context, seed, start_batch
        self.min_context = min_context
        self.batches_per_epoch = num_scenes // batch_size
        self.per_rank = batch_size // world_size
        self.first = rank * self.per_rank                      # this rank's slice of a global batch
        self._epoch, self._order = None, None

    def scene_order(self, epoch):
        """The epoch's permutation of all scenes, from (seed, epoch)."""
        if epoch != self._epoch:
            rng = generator(self.seed, ORDER_STREAM, epoch)
            self._epoch, self._order = epoch, rng.permutation(self.num_scenes)
        return self._order

    def global_batch(self, k):
        """Global batch k -> (scenes int (B,), views int (B, M + 1)); the last view of each row is the
        query."""
        epoch, position = divmod(k, self.batches_per_epoch)
        scenes = self.scene_order(epoch)[position * self.batch_size:(position + 1) * self.batch_size]
        rng = generator(self.seed, BATCH_STREAM, k)
        m = int(rng.integers(self.min_context, self.max_context + 1))              # M ~ U{min..K}
        # distinct per scene
        views = np.argsort(rng.random((self.batch_size, self.num_views)), axis=1)[:, :m + 1]
        return scenes, views

    def batch(self, k):
        """This rank's keys of global batch k."""
        scenes, views = self.global_batch(k)
        part = slice(self.first, self.first + self.per_rank)
        return _keys(scenes[part], views[part])

    def __iter__(self):
        k = self.start_batch
        while True:
            yield self.batch(k)
            k += 1


class FixedContextSampler:
    """Finite evaluation batch sampler: scenes 0 .. num_scenes-1 in order, each with num_context context
    views and one query view drawn from (seed, scene) alone (so batch size and world size do not change
    them); batches of batch_size (the last may be smaller), rank r yielding its contiguous slice of each."""

    def __init__(self, num_scenes, num_views, batch_size, num_context, seed, rank=0, world_size=1):
        _check_sampler_args(num_scenes, num_views, min(batch_size, num_scenes), num_context, seed, rank,
                            world_size, "num_context")
        if num_scenes % world_size:
            raise DatasetError(f"{num_scenes} evaluation scenes cannot be split over {world_size} processes; "
                               f"pass a number of scenes divisible by the world size.")
        self.num_scenes, self.num_views, self.batch_size = num_scenes, num_views, batch_size
        self.num_context, self.seed, self.rank, self.world_size = num_context, seed, rank, world_size

    def views(self, scene):
        """The view indices of one evaluation scene: num_context context views, then the query."""
        rng = generator(self.seed, EVAL_STREAM, scene)
        return rng.permutation(self.num_views)[:self.num_context + 1]

    def __len__(self):
        return -(-self.num_scenes // self.batch_size)

    def __iter__(self):
        for start in range(0, self.num_scenes, self.batch_size):
            scenes = np.arange(start, min(start + self.batch_size, self.num_scenes))
            share = len(scenes) // self.world_size
            scenes = scenes[self.rank * share:(self.rank + 1) * share]
            yield _keys(scenes, [self.views(s) for s in scenes])


# ---------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------

class BadScenes(int):
    """How many scenes of a batch failed their checks and were left out of it (an int: 0 for a good batch),
    with their one-sentence messages in .messages."""

    def __new__(cls, messages=()):
        self = super().__new__(cls, len(messages))
        self.messages = tuple(messages)
        return self

    def __reduce__(self):                                   # from a DataLoader worker to the main process
        return BadScenes, (self.messages,)


def collate_views(items):
    """[(frames (V, 3, 64, 64), viewpoints (V, 7)) or a bad scene's message] -> (frames (B', V, ...),
    viewpoints (B', V, 7), BadScenes of the messages left out). Stacked by numpy: torch's stack of small
    uint8 tensors in the main process can take hundreds of ms when its threads compete with training
    for the cores."""
    good = [item for item in items if not isinstance(item, str)]
    bad = BadScenes([item for item in items if isinstance(item, str)])
    if not good:
        return None, None, bad
    frames = torch.from_numpy(np.stack([f.numpy() for f, _ in good]))
    viewpoints = torch.from_numpy(np.stack([v.numpy() for _, v in good]))
    return frames, viewpoints, bad


def _quiet_worker(worker_id):
    """Ctrl-C reaches every process of the terminal, and SIGTERM every process of a job when Slurm's time
    is up or `pkill -f train.py` runs; the workers leave both to the main process, which saves a
    checkpoint and shuts them down (a worker killed first would crash the main process mid-save).
    They still stop with their parent: DataLoader workers exit when the main process is gone."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(root_dir, batch_size, max_context, seed, workers, start_batch=0, rank=0, world_size=1,
                pin_memory=False, min_context=1):
    """Training loader over a split folder: an endless stream of batches (frames uint8 (B, M+1, 3, 64, 64),
    viewpoints float32 (B, M+1, 7), bad), B = batch_size // world_size, the last view of each scene
    the query, M ~ Uniform{min_context..max_context}. Batch t is the same for any number of workers;
    start_batch=t resumes there. A scene that fails its checks is left out of its batch and reported in
    `bad` (BadScenes: their count, and their messages), for the training loop to stop on or count."""
    dataset = SceneViews(root_dir, report_bad_scenes=True)
    sampler = ContextBatchSampler(len(dataset), dataset.num_views, batch_size, max_context, seed,
                                  rank, world_size, start_batch, min_context)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory,
                      persistent_workers=workers > 0, collate_fn=collate_views,
                      worker_init_fn=_quiet_worker if workers > 0 else None)


def make_eval_loader(root_dir, num_scenes, batch_size, num_context, seed, workers=0, rank=0, world_size=1,
                     pin_memory=False):
    """Evaluation loader: the first num_scenes scenes of a split, each with num_context context views
    and a query drawn from the seed; the same batches every time. Batches as make_loader's."""
    dataset = SceneViews(root_dir)
    if num_scenes > len(dataset):
        raise DatasetError(f"{root_dir} holds {len(dataset)} scenes, fewer than the {num_scenes} asked for "
                           f"evaluation; ask for at most {len(dataset)}.")
    sampler = FixedContextSampler(num_scenes, dataset.num_views, batch_size, num_context, seed, rank,
                                  world_size)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory,
                      persistent_workers=workers > 0)


# ---------------------------------------------------------------------------------------------
# The built-in scenes (rendered here, on first use, when no data folder is given)

# The built-in scenes (--builtin) and the kind of DeepMind data each is like (torch-gqn's --dataset names).
BUILTIN_DATASETS = {"shepard_metzler": "Shepard-Metzler", "rooms": "Room",
                    "rooms_free_camera_no_object_rotations": "Room",
                    "rooms_free_camera_with_object_rotations": "Room", "mazes": "Labyrinth", "jaco": "Jaco"}
# the scenes (train, test) a kind renders unless told: mazes hold 300 views a scene and cost the most; jaco's
# MuJoCo frames cost about 20 times a room's
BUILTIN_SCENES = {"shepard_metzler": (20_000, 1_000), "rooms": (20_000, 1_000),
                  "rooms_free_camera_no_object_rotations": (20_000, 1_000),
                  "rooms_free_camera_with_object_rotations": (20_000, 1_000), "mazes": (2_000, 200),
                  "jaco": (2_000, 200)}
# the kinds dataset/rooms.py renders, by their --builtin name
_ROOMS_KINDS = {"rooms": "rooms_ring_camera", "rooms_free_camera_no_object_rotations":
                "rooms_free_camera_no_object_rotations", "rooms_free_camera_with_object_rotations":
                "rooms_free_camera_with_object_rotations"}


def builtin_root(kind, data_root, parts=7):
    """The folder of the built-in scenes `kind` (one of BUILTIN_DATASETS) under data_root; parts:
    Shepard-Metzler's cubes."""
    if kind in _ROOMS_KINDS:
        from dataset import rooms
        return rooms.builtin_root(data_root, _ROOMS_KINDS[kind])
    if kind == "mazes":
        from dataset import mazes
        return mazes.builtin_root(data_root)
    if kind == "jaco":
        from dataset import jaco
        return jaco.builtin_root(data_root)
    from dataset import shepard_metzler
    return shepard_metzler.builtin_root(data_root, parts)


def ensure_builtin(kind, root, train_scenes, test_scenes, parts=7, splits=("train", "test")):
    """Render the `splits` of the built-in scenes `kind` into root/train and root/test once (seed 0; numpy
    renderers, MuJoCo for jaco, in up to two processes) and return the two folders (train, test); a split
    not asked for is neither rendered nor checked. dataset.builtin.RenderError says why it could not."""
    workers = max(1, min(2, os.cpu_count() or 1))
    if kind in _ROOMS_KINDS:
        from dataset.rooms import ensure_builtin_rooms
        return ensure_builtin_rooms(root, train_scenes, test_scenes, seed=0, workers=workers, splits=splits,
                                    kind=_ROOMS_KINDS[kind])
    if kind == "mazes":
        from dataset.mazes import ensure_builtin_mazes
        return ensure_builtin_mazes(root, train_scenes, test_scenes, seed=0, workers=workers, splits=splits)
    if kind == "jaco":
        from dataset.jaco import ensure_builtin_jaco
        return ensure_builtin_jaco(root, train_scenes, test_scenes, seed=0, workers=workers, splits=splits)
    from dataset.shepard_metzler import ensure_builtin_dataset
    return ensure_builtin_dataset(root, parts=parts, train_scenes=train_scenes, test_scenes=test_scenes,
                                  seed=0, workers=workers, splits=splits)
