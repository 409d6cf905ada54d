"""Per-pixel labels beside a split's shards: the format, its writer and its reader.

A split folder written with labels (the built-in rooms' test split, dataset/rooms.py) holds, beside
each shard `shard-NNNNN.gqn`, a label file `shard-NNNNN.labels` with one uint8 label image per view
of each of the shard's scenes, at the model's 64x64 (labels_at samples larger frames' labels), in one of
two schemes (`SCHEMES`, named in the header):

    rooms (rooms and mazes): 0 sky, 1 wall, 2 floor, 3 + k the scene's object k (k = 0, 1, ...)
    jaco:                    0 background, 1 floor, 2 arm, 3 target

A scheme also names the regions evaluation scores (metrics.region_metrics): a colour error over each of
`errors`, an IoU for each of `ious`.

Label file format (this docstring is its documentation), read without pickle, little-endian:

    bytes 0..7  magic b"GQNLABL1"
    uint64      H, the length of the header in bytes
    H bytes     UTF-8 JSON header {"scenes": n, "views": S, "image_size": P, "classes": "...",
                "scheme": "rooms" or "jaco" (absent: rooms)}
    int64       offsets, n + 1 entries, offsets[0] = 0, never decreasing
    uint32      checksums, n entries: scene i's is the CRC32 (zlib's) of its uncompressed labels
    bytes       blob: scene i's labels, uint8 (S, P, P) in C order, zlib-compressed, at
                blob[offsets[i] : offsets[i + 1]]

A label file is written to a hidden temporary file and renamed into place (whole or absent). Every
scene read is checked against its checksum. Data without labels (DeepMind's, converted) simply has
no label files: open_labels gives None there, and evaluation leaves region metrics out.
"""
import json
import os
import re
import struct
import zlib
from typing import NamedTuple

import numpy as np

from dataset.atomic import write_file_atomic
from dataset.errors import DatasetError

MAGIC = b"GQNLABL1"
LABELS_NAME = "shard-{:05d}.labels"
LABELS_PATTERN = re.compile(r"shard-(\d+)\.labels")
SKY, WALL, FLOOR, FIRST_OBJECT = 0, 1, 2, 3
JACO_BACKGROUND, JACO_FLOOR, JACO_ARM, JACO_TARGET = 0, 1, 2, 3


class LabelScheme(NamedTuple):
    """What a split's label values mean: regions maps a region's name to its label values (lowest, highest;
    highest None: every value from lowest up); evaluation scores the colour error over each region of
    `errors` and the IoU (by colour) of each of `ious`, in that order."""
    name: str
    classes: str
    regions: dict
    errors: tuple
    ious: tuple

    def mask(self, labels, region):
        """labels (any shape, integer) -> bool mask of the region's pixels."""
        low, high = self.regions[region]
        return labels >= low if high is None else (labels >= low) & (labels <= high)

    def metric_names(self):
        """The region metrics' names, in table order: '<region>_error', then '<region>_iou'."""
        return [f"{r}_error" for r in self.errors] + [f"{r}_iou" for r in self.ious]


ROOMS_SCHEME = LabelScheme("rooms", "0 sky, 1 wall, 2 floor, 3+k object k",
                           dict(sky=(SKY, SKY), wall=(WALL, WALL), floor=(FLOOR, FLOOR),
                                object=(FIRST_OBJECT, None)),
                           errors=("wall", "floor", "object"), ious=("object",))
JACO_SCHEME = LabelScheme("jaco", "0 background, 1 floor, 2 arm, 3 target",
                          dict(background=(JACO_BACKGROUND, JACO_BACKGROUND), floor=(JACO_FLOOR, JACO_FLOOR),
                               arm=(JACO_ARM, JACO_ARM), target=(JACO_TARGET, JACO_TARGET)),
                          errors=("arm", "target", "floor"), ious=("arm", "target"))
SCHEMES = {s.name: s for s in (ROOMS_SCHEME, JACO_SCHEME)}
CLASSES = ROOMS_SCHEME.classes


def labels_name(shard):
    """The label file's name beside shard number `shard`."""
    return LABELS_NAME.format(shard)


def write_labels(path, scenes, scheme=ROOMS_SCHEME):
    """Write the labels of a shard's scenes, each uint8 (S, P, P), in `scheme`, atomically to path."""
    path = os.fspath(path)
    scenes = [np.ascontiguousarray(s, dtype=np.uint8) for s in scenes]
    shapes = {s.shape for s in scenes}
    if not scenes or len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise DatasetError(f"cannot write {path}: labels must be one or more scenes of the same shape "
                           f"(S, P, P), got shapes {sorted(shapes)}; pass one label image per view.")
    views, size, _ = scenes[0].shape
    header = json.dumps({"scenes": len(scenes), "views": views, "image_size": size,
                         "classes": scheme.classes, "scheme": scheme.name}).encode()
    raw = [s.tobytes() for s in scenes]
    blobs = [zlib.compress(r, 6) for r in raw]
    offsets = np.zeros(len(blobs) + 1, dtype="<i8")
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    checksums = np.array([zlib.crc32(r) for r in raw], dtype="<u4")
    write_file_atomic(path, [MAGIC, struct.pack("<Q", len(header)), header, offsets.tobytes(),
                             checksums.tobytes()] + blobs)


def _corrupt(path, reason):
    return DatasetError(f"{path} is not a valid label file: {reason}; delete it and render the split again.")


class LabelFile:
    """One label file, opened and checked from its header; scene(i) reads and checks scene i."""

    def __init__(self, path):
        self.path = os.fspath(path)
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                start = f.read(16)
                if len(start) < 16 or start[:8] != MAGIC:
                    raise _corrupt(self.path, f"it does not start with the magic {MAGIC!r}")
                (length,) = struct.unpack("<Q", start[8:])
                try:
                    header = json.loads(f.read(length).decode("utf-8"))
                except ValueError as error:
                    raise _corrupt(self.path, f"its header is not UTF-8 JSON ({error})") from None
                for key in ("scenes", "views", "image_size"):
                    if type(header.get(key)) is not int or header[key] < 1:
                        raise _corrupt(self.path, f"its header's {key!r} is {header.get(key)!r}, "
                                                  f"not a positive integer")
                if header.get("scheme", "rooms") not in SCHEMES:
                    raise _corrupt(self.path, f"its header's scheme {header.get('scheme')!r} is none of "
                                              f"{sorted(SCHEMES)}")
                n = header["scenes"]
                table = f.read(8 * (n + 1) + 4 * n)
                if len(table) < 8 * (n + 1) + 4 * n:
                    raise _corrupt(self.path, "it is shorter than its header says (truncated?)")
        except OSError as error:
            raise DatasetError(f"cannot read {self.path} ({error.strerror}); check that it exists and is "
                               f"readable.") from None
        self.scenes, self.views, self.image_size = n, header["views"], header["image_size"]
        self.scheme = SCHEMES[header.get("scheme", "rooms")]
        self.offsets = np.frombuffer(table[:8 * (n + 1)], dtype="<i8")
        self.checksums = np.frombuffer(table[8 * (n + 1):], dtype="<u4")
        self.blob_start = 16 + length + len(table)
        if self.blob_start + int(self.offsets[-1]) != size:
            raise _corrupt(self.path, f"its labels should end at byte "
                                      f"{self.blob_start + int(self.offsets[-1])} "
                                      f"but the file has {size} bytes (truncated or appended to?)")

    def scene(self, index):
        """Scene `index` of this file -> uint8 (S, P, P), checked against its checksum."""
        start, stop = int(self.offsets[index]), int(self.offsets[index + 1])
        with open(self.path, "rb") as f:
            f.seek(self.blob_start + start)
            data = f.read(stop - start)
        try:
            raw = zlib.decompress(data)
        except zlib.error:
            raw = b""
        if len(raw) != self.views * self.image_size ** 2 or zlib.crc32(raw) != int(self.checksums[index]):
            raise _corrupt(self.path, f"scene {index}'s labels fail their checksum")
        return np.frombuffer(raw, dtype=np.uint8).reshape(self.views, self.image_size, self.image_size)


class SceneLabels:
    """The labels of a split folder's scenes, in the split's scene order (shard by shard):
    labels.view(scene, view) -> uint8 (P, P); labels.scene(scene) -> uint8 (S, P, P); labels.scheme: what
    the values mean (a LabelScheme). Build it with open_labels(split_dir), which gives None for a split
    without label files."""

    def __init__(self, files):
        self.files = [LabelFile(p) for p in files]
        self.starts = np.cumsum([0] + [f.scenes for f in self.files]).tolist()
        schemes = {f.scheme.name for f in self.files}
        if len(schemes) > 1:
            raise DatasetError(f"the label files of {os.path.dirname(self.files[0].path)} mix the schemes "
                               f"{sorted(schemes)}; render the split again.")
        self.scheme = self.files[0].scheme if self.files else ROOMS_SCHEME

    def __len__(self):
        return self.starts[-1]

    def scene(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"scene {index} is out of range for {len(self)} labelled scenes")
        k = int(np.searchsorted(self.starts, index, side="right")) - 1
        return self.files[k].scene(index - self.starts[k])

    def view(self, scene, view):
        """Scene `scene`, view `view` -> its label image, uint8 (P, P)."""
        return self.scene(scene)[view]


def open_labels(split_dir):
    """The SceneLabels of a split folder, or None when it has no label files (e.g. DeepMind's data).

    Every shard must then have its label file with the same number of scenes."""
    from dataset.shards import SHARD_PATTERN, read_shard_header

    split_dir = os.fspath(split_dir)
    names = os.listdir(split_dir)
    labels = {int(m[1]): name for name in names if (m := LABELS_PATTERN.fullmatch(name))}
    if not labels:
        return None
    shards = sorted((int(m[1]), name) for name in names if (m := SHARD_PATTERN.fullmatch(name)))
    missing = [name for number, name in shards if number not in labels]
    if missing or len(labels) != len(shards):
        what = f"{missing[0]} has none" if missing else "some label files have no shard"
        raise DatasetError(f"{split_dir} holds label files for some shards only ({what}); delete the "
                           f".labels files or render the split again.")
    paths = [os.path.join(split_dir, labels[number]) for number, _ in shards]
    result = SceneLabels(paths)
    for path, (_, name), file in zip(paths, shards, result.files):
        header = read_shard_header(os.path.join(split_dir, name))
        if (file.scenes, file.views) != (header["scenes"], header["views"]):
            raise DatasetError(f"{path} labels {file.scenes} scenes of {file.views} views but {name} holds "
                               f"{header['scenes']} of {header['views']}; render the split again.")
    return result


def labels_at(label, size=64):
    """Labels (V, H, W) of frames of any side -> (V, size, size), each the label at the centre of a pixel of
    the size x size grid (nearest)."""
    index = ((np.arange(size) + 0.5) * label.shape[1] / size).astype(np.int64)
    return label[:, index][:, :, ((np.arange(size) + 0.5) * label.shape[2] / size).astype(np.int64)]
