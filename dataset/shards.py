"""The project's shard format: writing, the header, and random-access reading.

Shard format (this docstring is the format's documentation)
-----------------------------------------------------------
A split folder (e.g. DIR/train) holds shard files `shard-00000.gqn`, `shard-00001.gqn`, ...; the
split's scenes are the shards' scenes in shard-number order. A shard holds n scenes of S views
each, is read without pickle, and any one scene can be read without reading the others.
All numbers are little-endian:

    bytes 0..7  magic b"GQNSHRD2"
    uint64      H, the length of the header in bytes
    H bytes     UTF-8 JSON header with at least
                {"scenes": n, "views": S, "image_size": P, "camera": "x y z yaw pitch"}
                where P is the side of the stored square JPEG frames (64, 84 or 128 in DeepMind's
                data); more keys may follow (e.g. "dataset"), readers ignore them
    float32     cameras, shape (n, S, 5): DeepMind's raw cameras (x, y, z, yaw, pitch), radians
    int64       offsets, n*S + 1 entries, offsets[0] = 0, never decreasing
    uint32      checksums, n*S entries: view j of scene i's is the CRC32 (zlib's) of its camera's 20
                bytes followed by its JPEG bytes
    bytes       blob: all JPEG frames concatenated, exactly as the source encoded them;
                frame j of scene i is blob[offsets[i*S + j] : offsets[i*S + j + 1]]

So the cameras start at byte 16 + H, the offsets 20*n*S bytes later, the checksums 8*(n*S + 1) bytes
after that and the blob 4*n*S bytes later, and the file ends where the last frame ends
(read_shard_header checks this, so a truncated shard is refused when the split is opened). Every
view read is checked against its checksum: a damaged frame or camera is refused, naming the shard,
scene and view, instead of training on it (DeepMind's TFRecords carry CRCs; this keeps that promise
after conversion). write_shard writes a hidden temporary file in the same folder and renames it into
place: a shard exists whole or not at all. All shards of a split have the same S.

Shards of the first version (magic b"GQNSHRD1", written before checksums) are told apart by their
magic and still read: the same layout without the checksums, so their views are not checked.
"""

import bisect
import collections
import itertools
import json
import os
import re
import struct
import zlib

import numpy as np

from dataset.atomic import write_file_atomic
from dataset.errors import DatasetError
from dataset.jpeg import JPEG_TYPES, IMAGE_SIZE, RawViews, jpeg_info

MAGIC = b"GQNSHRD2"                  # with a CRC32 per view
MAGIC_V1 = b"GQNSHRD1"               # the first version, without checksums: still read
CAMERA_LAYOUT = "x y z yaw pitch"
SHARD_NAME = "shard-{:05d}.gqn"
SHARD_PATTERN = re.compile(r"shard-(\d+)\.gqn")
MAX_OPEN_SHARDS = 64                  # open file descriptors kept per process (least recently used closed)
_CAMERA_BYTES = 5 * 4                 # one view's raw camera: 5 float32
_OFFSET_BYTES = 8                     # one int64 offset
_CHECKSUM_BYTES = 4                   # one uint32 CRC32
_WRITE_BUFFER = 1 << 20               # bytes write_shard buffers per write call


def write_shard(path, frames, cameras, extra_header=None):
    """Write one shard atomically (temporary file + os.replace).

    frames:  list of n scenes, each a list of S JPEG `bytes` (stored exactly as given)
    cameras: array (n, S, 5) of raw cameras (x, y, z, yaw, pitch)
    extra_header: optional dict of more JSON header keys (e.g. {"dataset": "jaco"})
    """
    path = os.fspath(path)
    n = len(frames)
    if n == 0:
        raise DatasetError(f"cannot write {path} without scenes; pass at least one scene.")
    views = len(frames[0])
    try:
        cameras = np.asarray(cameras, dtype=np.float32)
    except ValueError:
        cameras = np.zeros((0,), np.float32)       # ragged cameras: reported just below
    lengths = sorted({len(scene) for scene in frames})
    if views == 0 or len(lengths) != 1 or cameras.shape != (n, views, 5):
        raise DatasetError(f"cannot write {path}: frames are {n} scenes of {lengths} views but cameras "
                           f"have shape {cameras.shape}; pass n scenes of S frames each and cameras of shape "
                           f"(n, S, 5).")
    bad = np.flatnonzero(~np.isfinite(cameras).all(axis=(1, 2)))
    if bad.size:
        raise DatasetError(f"cannot write {path}: the cameras of scene {bad[0]} hold NaN or inf; "
                           f"drop that scene or fix its cameras.")
    blobs = [frame for scene in frames for frame in scene]                  # (n*S,) JPEG bytes
    # bytearray, memoryview: their bytes
    if not set(map(type, blobs)) <= {bytes}:
        blobs = [bytes(frame) if isinstance(frame, JPEG_TYPES) else frame for frame in blobs]
    try:                                        # the frames' sizes from their markers, no decoding
        sizes = set(map(jpeg_info, blobs, itertools.repeat(path)))           # {(height, width, components)}
    except DatasetError:                        # again, one by one, to name the scene and view
        for k, frame in enumerate(blobs):
            jpeg_info(frame, f"{path} scene {k // views} view {k % views}")
        raise
    sides = set()
    for height, width, _ in sizes:
        if width != height or width < IMAGE_SIZE:
            k = next(k for k, frame in enumerate(blobs) if jpeg_info(frame)[:2] == (height, width))
            raise DatasetError(f"{path} scene {k // views} view {k % views} is a {width}x{height} JPEG; "
                               f"frames must be square JPEGs of at least {IMAGE_SIZE} pixels.")
        sides.add(width)
    if len(sides) != 1:
        raise DatasetError(f"cannot write {path}: its frames have several sizes {sorted(sides)}; "
                           f"write frames of one size per shard.")
    header = {"scenes": n, "views": views, "image_size": sides.pop(), "camera": CAMERA_LAYOUT}
    for key, value in (extra_header or {}).items():
        if key in header:
            raise DatasetError(f"cannot write {path}: extra header key {key!r} is reserved; rename it.")
        header[key] = value
    header_bytes = json.dumps(header).encode("utf-8")
    offsets = np.zeros(n * views + 1, dtype="<i8")
    offsets[1:] = np.cumsum(np.fromiter(map(len, blobs), np.int64, n * views))
    camera_bytes = cameras.astype("<f4").tobytes()
    checksums = np.fromiter((view_checksum(camera_bytes[k * _CAMERA_BYTES:(k + 1) * _CAMERA_BYTES], frame)
                             for k, frame in enumerate(blobs)), "<u4", n * views)

    # a crash leaves at most a hidden .tmp file behind
    write_file_atomic(path, [MAGIC, struct.pack("<Q", len(header_bytes)), header_bytes, camera_bytes,
                             offsets.tobytes(), checksums.tobytes(), *blobs], buffering=_WRITE_BUFFER)


def write_split(split_dir, scenes, scenes_per_shard=1000, start_shard=0, extra_header=None):
    """Write scenes as shards split_dir/shard-{start_shard:05d}.gqn, ... of scenes_per_shard scenes each.

    scenes: iterable of (frames, cameras), frames a list of S JPEG bytes, cameras (S, 5) raw.
    Returns the number of scenes written.
    """
    split_dir = os.fspath(split_dir)
    if scenes_per_shard < 1:
        raise DatasetError(f"scenes_per_shard is {scenes_per_shard}; pass a positive number.")
    os.makedirs(split_dir, exist_ok=True)
    written, shard, frames, cameras = 0, start_shard, [], []

    def flush():
        nonlocal shard
        write_shard(os.path.join(split_dir, SHARD_NAME.format(shard)), frames, cameras, extra_header)
        shard += 1
        frames.clear()
        cameras.clear()

    for scene_frames, scene_cameras in scenes:
        scene_cameras = np.asarray(scene_cameras, dtype=np.float32)
        if scene_cameras.shape != (len(scene_frames), 5):
            raise DatasetError(f"scene {written} for {split_dir} has {len(scene_frames)} frames "
                               f"but cameras of shape {scene_cameras.shape}; "
                               f"pass one (x, y, z, yaw, pitch) camera per frame.")
        frames.append(list(scene_frames))
        cameras.append(scene_cameras)
        written += 1
        if len(frames) == scenes_per_shard:
            flush()
    if frames:
        flush()
    return written


def view_checksum(camera_bytes, frame):
    """The CRC32 of one view: its camera's 20 bytes (5 little-endian float32), then its JPEG bytes."""
    return zlib.crc32(frame, zlib.crc32(camera_bytes))


def _corrupt_shard(path, reason):
    return DatasetError(f"{path} is not a valid GQN shard: {reason}; delete it and convert its source again.")


def read_shard_header(path):
    """Read and check a shard's header. Returns the JSON keys plus the byte positions
    "cameras_offset", "offsets_offset", "checksums_offset" (None in a first-version shard), "blob_offset"
    and "file_size"."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            start = f.read(16)
            if len(start) < 16 or start[:8] not in (MAGIC, MAGIC_V1):
                raise _corrupt_shard(path, f"it does not start with the magic {MAGIC!r} (or {MAGIC_V1!r})")
            (length,) = struct.unpack("<Q", start[8:])
            if 16 + length > file_size:
                raise _corrupt_shard(path, f"its header length {length} runs past the end of the file")
            try:
                header = json.loads(f.read(length).decode("utf-8"))
            except ValueError as error:
                raise _corrupt_shard(path, f"its header is not UTF-8 JSON ({error})") from None
            if not isinstance(header, dict):
                raise _corrupt_shard(path, "its header is not a JSON object")
            for key in ("scenes", "views", "image_size"):
                value = header.get(key)
                if type(value) is not int or value < 1:
                    raise _corrupt_shard(path, f"its header's {key!r} is {value!r}, not a positive integer")
            if header.get("camera") != CAMERA_LAYOUT:
                raise _corrupt_shard(path, f"its header's camera layout is {header.get('camera')!r}, "
                                           f"not {CAMERA_LAYOUT!r}")
            frames = header["scenes"] * header["views"]
            header["cameras_offset"] = 16 + length
            header["offsets_offset"] = header["cameras_offset"] + frames * _CAMERA_BYTES
            after_offsets = header["offsets_offset"] + (frames + 1) * _OFFSET_BYTES
            if start[:8] == MAGIC:
                header["checksums_offset"] = after_offsets
                header["blob_offset"] = after_offsets + frames * _CHECKSUM_BYTES
            else:
                header["checksums_offset"], header["blob_offset"] = None, after_offsets
            header["file_size"] = file_size
            if header["blob_offset"] > file_size:
                raise _corrupt_shard(path, "it is shorter than its header says (truncated?)")
            f.seek(after_offsets - _OFFSET_BYTES)
            (blob_size,) = struct.unpack("<q", f.read(_OFFSET_BYTES))
            if header["blob_offset"] + blob_size != file_size:
                raise _corrupt_shard(path, f"its frames should end at byte "
                                           f"{header['blob_offset'] + blob_size} "
                                           f"but the file has {file_size} bytes (truncated or appended to?)")
    except OSError as error:
        raise DatasetError(f"cannot read {path} ({error.strerror}); "
                           f"check that it exists and is readable.") from None
    return header


class ShardFolder:
    """Random access to the scenes of a split's shards. Built from the headers only; shard files are
    opened lazily and per process (handles are keyed by os.getpid(), so DataLoader workers forked after
    construction open their own), at most MAX_OPEN_SHARDS at a time."""

    def __init__(self, paths):
        self.paths = [os.fspath(p) for p in paths]
        self.headers = [read_shard_header(p) for p in self.paths]
        self.num_views = self.headers[0]["views"]
        for path, header in zip(self.paths, self.headers):
            if header["views"] != self.num_views:
                raise DatasetError(f"{path} has {header['views']} views per scene but {self.paths[0]} has "
                                   f"{self.num_views}; keep the shards of one dataset in a split folder.")
        # first scene of each shard
        self.starts = np.cumsum([0] + [h["scenes"] for h in self.headers]).tolist()
        # shard -> file descriptor
        self._pid, self._open = None, collections.OrderedDict()

    def __len__(self):
        return self.starts[-1]

    def locate(self, index):
        """Scene index of the split -> (shard number, scene index inside that shard)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"scene {index} is out of range for {len(self)} scenes")
        index %= len(self)
        shard = bisect.bisect_right(self.starts, index) - 1
        return shard, index - self.starts[shard]

    def _fd(self, shard):
        pid = os.getpid()
        if pid != self._pid:                       # first use in this process (a forked worker, say)
            self._pid, self._open = pid, collections.OrderedDict()
        if shard in self._open:
            self._open.move_to_end(shard)
            return self._open[shard]
        try:
            fd = os.open(self.paths[shard], os.O_RDONLY)
        except OSError as error:
            raise DatasetError(f"cannot open {self.paths[shard]} ({error.strerror}); check that it exists "
                               f"and is readable.") from None
        self._open[shard] = fd
        if len(self._open) > MAX_OPEN_SHARDS:
            os.close(self._open.popitem(last=False)[1])
        return fd

    def _pread(self, shard, size, offset):
        data = os.pread(self._fd(shard), size, offset)
        if len(data) != size:
            raise _corrupt_shard(self.paths[shard], "it became shorter after the split was opened")
        return data

    def read(self, index, views=None):
        """Scene `index`, views `views` (all if None) -> RawViews, the views' JPEG bytes and raw cameras."""
        shard, local = self.locate(index)
        header, path = self.headers[shard], self.paths[shard]
        views_per_scene = header["views"]
        where = f"{path} scene {local}"
        cameras = np.frombuffer(self._pread(shard, views_per_scene * _CAMERA_BYTES,
                                            header["cameras_offset"]
                                            + local * views_per_scene * _CAMERA_BYTES),
                                dtype="<f4").reshape(views_per_scene, 5)
        if not np.isfinite(cameras).all():
            raise DatasetError(f"{where} has NaN or inf cameras; convert that shard again from its source.")
        offsets = np.frombuffer(self._pread(shard, (views_per_scene + 1) * _OFFSET_BYTES,
                                            header["offsets_offset"]
                                            + local * views_per_scene * _OFFSET_BYTES),
                                dtype="<i8")
        blob_size = header["file_size"] - header["blob_offset"]
        if offsets[0] < 0 or offsets[-1] > blob_size or np.any(np.diff(offsets) < 0):
            raise _corrupt_shard(path, f"the frame offsets of scene {local} are out of order "
                                       f"or out of the file")
        if views is None:
            views = range(views_per_scene)
            scene = self._pread(shard, int(offsets[-1] - offsets[0]), header["blob_offset"] + int(offsets[0]))
            ends = (offsets - offsets[0]).tolist()
            jpegs = [scene[ends[v]:ends[v + 1]] for v in views]
        else:
            views = list(views)
            if any(not 0 <= v < views_per_scene for v in views):
                raise IndexError(f"views {views} are out of range for {where} with {views_per_scene} views")
            jpegs = [self._pread(shard, int(offsets[v + 1] - offsets[v]),
                                 header["blob_offset"] + int(offsets[v]))
                     for v in views]
        if header["checksums_offset"] is not None:
            checksums = np.frombuffer(self._pread(shard, views_per_scene * _CHECKSUM_BYTES,
                                                  header["checksums_offset"]
                                                  + local * views_per_scene * _CHECKSUM_BYTES), dtype="<u4")
            for v, frame in zip(views, jpegs):
                if view_checksum(cameras[v].tobytes(), frame) != checksums[v]:
                    raise DatasetError(f"{where} view {v} does not match its checksum (CRC32): the shard is "
                                       f"damaged; delete it and convert its source again.")
        return RawViews(jpegs, cameras[list(views)], list(views), where, header["image_size"])

    def close(self):
        """Close this process's open shard files."""
        if self._pid == os.getpid():
            for fd in self._open.values():
                os.close(fd)
        self._pid, self._open = None, collections.OrderedDict()

    def __getstate__(self):                        # file descriptors do not travel to other processes
        state = dict(self.__dict__)
        state["_pid"], state["_open"] = None, collections.OrderedDict()
        return state

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
