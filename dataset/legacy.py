"""Folders converted by the original torch-gqn: one scene per file, {i}.pt.gz or {i}.pt.

A folder of `{i}.pt.gz` or `{i}.pt` files (one scene per file; gzip'd or not, whatever the name
says; the numbers may skip, scene k is the k-th file in numeric order) is read as well, by a
restricted unpickler that builds only what such a file holds (numpy arrays, the Scene namedtuple,
torch storages) and refuses any other global before it is called: no code from the file runs.

Such a file is (optionally gzip'd) torch.save output of a namedtuple Scene(frames, cameras) from
the converter's __main__: frames a numpy object array of S JPEG bytes, cameras float32 (1, S, 5)
raw. Both torch serializations are read: the legacy
one (a run of pickles, storages after the last) and the zip one (data.pkl + data/<key>).
"""

import collections
import gzip
import io
import os
import pickle
import re
import struct
import zipfile

import numpy as np
import torch

from dataset.errors import DatasetError
from dataset.jpeg import RawViews

LEGACY_PATTERN = re.compile(r"(\d+)\.pt(\.gz)?")
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C      # the first pickle of a legacy torch.save file
LegacyScene = collections.namedtuple("LegacyScene", ["frames", "cameras"])   # stands in for __main__.Scene
_STORAGE_DTYPES = {"FloatStorage": torch.float32, "DoubleStorage": torch.float64,
                   "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
                   "ByteStorage": torch.uint8, "CharStorage": torch.int8, "ShortStorage": torch.int16,
                   "IntStorage": torch.int32, "LongStorage": torch.int64, "BoolStorage": torch.bool}


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:                                          # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _latin1_encode(text, encoding="latin1"):
    """What protocol-2 pickles call (as _codecs.encode) to rebuild a bytes object."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"unexpected text encoding {encoding!r}")
    return text.encode("latin1")


class _StorageType:
    """What the unpickler hands out for torch.FloatStorage and friends: just the element type."""
    def __init__(self, dtype):
        self.dtype = dtype


def _rebuild_tensor(storage, offset, size, stride, *unused):
    """torch._utils._rebuild_tensor(_v2) for the storages this unpickler made (flat tensors)."""
    if not isinstance(storage, torch.Tensor):
        raise pickle.UnpicklingError("a tensor refers to something that is not a storage")
    return torch.as_strided(storage, size, stride, offset)


_LEGACY_GLOBALS = {
    ("__main__", "Scene"): LegacyScene,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
}


class _SceneUnpickler(pickle.Unpickler):
    """Unpickles a torch-gqn scene file, allowing only the globals such a file needs.
    `storage(key, dtype, numel)` returns the flat tensor behind a torch storage persistent id."""

    def __init__(self, file, path, storage=None):
        super().__init__(file)
        self.path, self.storage = path, storage

    def find_class(self, module, name):
        if (module, name) in _LEGACY_GLOBALS:
            return _LEGACY_GLOBALS[(module, name)]
        if name == "Scene" and module.rpartition(".")[2] == "convert2torch":    # converter imported, not run
            return LegacyScene
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise DatasetError(f"{self.path} asks to load {module}.{name}, which no torch-gqn scene file needs, "
                           f"so it was refused without running anything (the file may be crafted to run "
                           f"code); delete it or convert the scene again.")

    def persistent_load(self, pid):
        # legacy: ("storage", type, key, location, numel, view); zip: ("storage", type, key, location, numel)
        if (self.storage is None or not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage"
                or not isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.60}")
        return self.storage(str(pid[2]), pid[1].dtype, int(pid[4]))


def _unpickle_torch_legacy(data, path):
    """Legacy torch.save bytes: magic, protocol, system info, the object, storage keys, storage data."""
    stream, storages = io.BytesIO(data), {}

    def storage(key, dtype, numel):                              # filled in once the object is read
        if numel * torch.empty(0, dtype=dtype).element_size() > len(data):
            raise pickle.UnpicklingError("a storage is larger than the file")
        if key not in storages:
            storages[key] = torch.empty(numel, dtype=dtype)
        return storages[key]

    if _SceneUnpickler(stream, path).load() != _TORCH_LEGACY_MAGIC:
        raise pickle.UnpicklingError("no torch.save magic number")
    _SceneUnpickler(stream, path).load()                         # protocol version
    _SceneUnpickler(stream, path).load()                         # system info
    scene = _SceneUnpickler(stream, path, storage).load()
    for key in _SceneUnpickler(stream, path).load():             # storage data follows, in key order
        flat = storages[str(key)]
        (numel,) = struct.unpack("<q", stream.read(8))
        size = numel * flat.element_size()
        raw = stream.read(size)
        if numel != flat.numel() or len(raw) != size:
            raise pickle.UnpicklingError("storage data is truncated")
        flat.copy_(torch.frombuffer(bytearray(raw), dtype=flat.dtype))
    return scene


def _unpickle_torch_zip(data, path):
    """Zip torch.save bytes: <archive>/data.pkl, storages in <archive>/data/<key>."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("data.pkl")]
        if len(pickles) != 1:
            raise pickle.UnpicklingError("no single data.pkl in the archive")
        prefix = pickles[0][:-len("data.pkl")]

        def storage(key, dtype, numel):
            raw = archive.read(f"{prefix}data/{key}")
            flat = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            if flat.numel() != numel:
                raise pickle.UnpicklingError("storage data is truncated")
            return flat

        return _SceneUnpickler(io.BytesIO(archive.read(pickles[0])), path, storage).load()


def load_legacy_scene(path):
    """A torch-gqn scene file ({i}.pt.gz or {i}.pt, gzip'd or not) -> (list of S JPEG bytes,
    cameras float32 (S, 5))."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise DatasetError(f"cannot read {path} ({error.strerror}); "
                           f"check that it exists and is readable.") from None
    try:
        if data[:2] == b"\x1f\x8b":                              # gzip, whatever the file's name says
            data = gzip.decompress(data)
        unpickle = _unpickle_torch_zip if data[:4] == b"PK\x03\x04" else _unpickle_torch_legacy
        scene = unpickle(data, path)
        if not isinstance(scene, LegacyScene):
            raise pickle.UnpicklingError(f"it holds a {type(scene).__name__}, not a Scene")
        parts = [np.asarray(part.numpy() if isinstance(part, torch.Tensor) else part) for part in scene]
        if parts[0].dtype != object:                             # fields saved in the other order
            parts.reverse()
        frames, cameras = parts[0].reshape(-1), parts[1]
        if frames.dtype != object or cameras.dtype.kind != "f":
            raise pickle.UnpicklingError("its Scene does not hold JPEG frames and float cameras")
    except DatasetError:
        raise
    except Exception as error:                                   # any damage to gzip, zip or pickle
        raise DatasetError(f"{path} is not a readable torch-gqn scene file "
                           f"({type(error).__name__}: {error}); "
                           f"delete it or convert the scene again.") from None
    if cameras.size != 5 * len(frames):
        raise DatasetError(f"{path} holds {len(frames)} frames but cameras of shape {cameras.shape}; "
                           f"convert the scene again so that each frame has one "
                           f"(x, y, z, yaw, pitch) camera.")
    for view, frame in enumerate(frames):
        if not isinstance(frame, bytes):
            raise DatasetError(f"{path} view {view} is a {type(frame).__name__}, not JPEG bytes; "
                               f"convert the scene again with JPEG frames.")
    return list(frames), cameras.reshape(-1, 5).astype(np.float32)


class LegacyFolder:
    """Random access to a torch-gqn folder: scene i is the i-th file in numeric order (the original
    converter's numbering can skip numbers). Files are opened only when read."""

    def __init__(self, paths):
        self.paths = [os.fspath(p) for p in paths]
        self._num_views = None

    def __len__(self):
        return len(self.paths)

    @property
    def num_views(self):
        """Views per scene, read from the first file (every scene read is checked against it)."""
        if self._num_views is None:
            self._num_views = len(load_legacy_scene(self.paths[0])[0])
        return self._num_views

    def read(self, index, views=None):
        """Scene `index`, views `views` (all if None) -> RawViews, the views' JPEG bytes and raw cameras."""
        path = self.paths[index]
        jpegs, cameras = load_legacy_scene(path)
        if not np.isfinite(cameras).all():
            raise DatasetError(f"{path} has NaN or inf cameras; convert that scene again from its source.")
        if views is None:
            return RawViews(jpegs, cameras, list(range(len(jpegs))), path, None)
        views = list(views)
        if len(jpegs) != self.num_views:
            raise DatasetError(f"{path} has {len(jpegs)} views but {self.paths[0]} has {self.num_views}; "
                               f"keep the scenes of one dataset in a folder.")
        if any(not 0 <= v < len(jpegs) for v in views):
            raise IndexError(f"views {views} are out of range for {path} with {len(jpegs)} views")
        return RawViews([jpegs[v] for v in views], cameras[views], views, path, None)
