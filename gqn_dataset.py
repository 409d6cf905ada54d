"""GQN scene data: the project's shard format, its readers, and the training input pipeline.

Shard format (this docstring is the format's documentation)
-----------------------------------------------------------
A split folder (e.g. DIR/train) holds shard files `shard-00000.gqn`, `shard-00001.gqn`, ...; the
split's scenes are the shards' scenes in shard-number order. A shard holds n scenes of S views
each, is read without pickle, and any one scene can be read without reading the others.
All numbers are little-endian:

    bytes 0..7  magic b"GQNSHRD1"
    uint64      H, the length of the header in bytes
    H bytes     UTF-8 JSON header with at least
                {"scenes": n, "views": S, "image_size": P, "camera": "x y z yaw pitch"}
                where P is the side of the stored square JPEG frames (64, 84 or 128 in DeepMind's
                data); more keys may follow (e.g. "dataset"), readers ignore them
    float32     cameras, shape (n, S, 5): DeepMind's raw cameras (x, y, z, yaw, pitch), radians
    int64       offsets, n*S + 1 entries, offsets[0] = 0, never decreasing
    bytes       blob: all JPEG frames concatenated, exactly as the source encoded them;
                frame j of scene i is blob[offsets[i*S + j] : offsets[i*S + j + 1]]

So the cameras start at byte 16 + H, the offsets 20*n*S bytes later, the blob 8*(n*S + 1) bytes
after that, and the file ends where the last frame ends (read_shard_header checks this, so a
truncated shard is refused when the split is opened). write_shard writes a hidden temporary file
in the same folder and renames it into place: a shard exists whole or not at all. All shards of a
split have the same S.

Frames and viewpoints
---------------------
Frames are decoded with PIL (decode_jpeg); jpeg_info checks a frame's JPEG structure and reads its
size without decoding (write_shard, the converter). Frames larger than 64x64 (mazes 84, rooms with
object rotations 128) are resized to 64x64, bilinear (PIL), view by view, in resize_frames and
nowhere else. The project's one viewpoint order is torch-gqn's,
    (x, y, z, cos yaw, sin yaw, cos pitch, sin pitch),
made from raw cameras by raw_to_viewpoint. DeepMind's reader gives
    (x, y, z, sin yaw, cos yaw, sin pitch, cos pitch);
deepmind_to_project_viewpoint and project_to_deepmind_viewpoint convert 7-d data between the two.

Folders converted by the original torch-gqn
-------------------------------------------
A folder of `{i}.pt.gz` or `{i}.pt` files (one scene per file; gzip'd or not, whatever the name
says; the numbers may skip, scene k is the k-th file in numeric order) is read as well, by a
restricted unpickler that builds only what such a file holds (numpy arrays, the Scene namedtuple,
torch storages) and refuses any other global before it is called: no code from the file runs.

Reading a split
---------------
    GQNDataset(root)[i] -> (images float32 (S, 3, 64, 64) in [0, 1], viewpoints float32 (S, 7))
        torch-gqn's contract: all views of scene i.
    make_loader(root, batch_size, max_context, seed, workers, start_batch=step) -> endless batches
        (frames uint8 (B, M+1, 3, 64, 64), viewpoints float32 (B, M+1, 7), skipped), the last view the
        query (skipped: scenes left out by skip_bad_scenes=True, else always 0):
            for frames, viewpoints, skipped in loader:
                x = frames.to(device).float() / 255           # uint8 travels, 4x less than float
                x_c, v_c, x_q, v_q = x[:, :-1], viewpoints[:, :-1], x[:, -1], viewpoints[:, -1]
        SceneViews decodes only the sampled views; ContextBatchSampler makes batch k a pure function
        of (seed, k), so any number of workers gives the same batches and start_batch=k resumes.
    make_eval_loader(root, num_scenes, batch_size, num_context, seed) -> the same, finite, with a fixed
        context count over the first num_scenes scenes (FixedContextSampler).
Mistakes in data or settings raise DatasetError, whose message is one sentence naming the file
(and scene and view) and the fix.
"""
import bisect
import collections
import gzip
import io
import itertools
import json
import os
import pickle
import re
import struct
import zipfile

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

MAGIC = b"GQNSHRD1"
CAMERA_LAYOUT = "x y z yaw pitch"
IMAGE_SIZE = 64                       # the model's frame side
SHARD_NAME = "shard-{:05d}.gqn"
SHARD_PATTERN = re.compile(r"shard-(\d+)\.gqn")
MAX_OPEN_SHARDS = 64                  # open file descriptors kept per process (least recently used closed)
_CAMERA_BYTES = 5 * 4                 # one view's raw camera: 5 float32
_OFFSET_BYTES = 8                     # one int64 offset
_WRITE_BUFFER = 1 << 20               # bytes write_shard buffers per write call


class DatasetError(ValueError):
    """A problem with data on disk or a data setting that the user can fix; the message says how."""


# ---------------------------------------------------------------------------------------------
# Viewpoints
# ---------------------------------------------------------------------------------------------

def raw_to_viewpoint(cameras):
    """Raw cameras (..., 5) = (x, y, z, yaw, pitch) -> viewpoints (..., 7) in the project's order
    (x, y, z, cos yaw, sin yaw, cos pitch, sin pitch). Takes and returns a torch tensor or a numpy array."""
    if cameras.shape[-1] != 5:
        raise DatasetError(f"raw cameras must end in 5 numbers (x, y, z, yaw, pitch) but have shape "
                           f"{tuple(cameras.shape)}; pass the cameras as stored in the data.")
    xyz, yaw, pitch = cameras[..., :3], cameras[..., 3:4], cameras[..., 4:5]
    if isinstance(cameras, torch.Tensor):
        return torch.cat([xyz, torch.cos(yaw), torch.sin(yaw), torch.cos(pitch), torch.sin(pitch)], dim=-1)
    return np.concatenate([xyz, np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)], axis=-1)


_SWAP_SIN_COS = [0, 1, 2, 4, 3, 6, 5]   # swapping each (sin, cos) pair is its own inverse


def deepmind_to_project_viewpoint(viewpoints):
    """(..., 7) in DeepMind's order (x, y, z, sin yaw, cos yaw, sin pitch, cos pitch) -> the project's order."""
    if viewpoints.shape[-1] != 7:
        raise DatasetError(f"viewpoints must end in 7 numbers but have shape {tuple(viewpoints.shape)}; "
                           f"pass 7-d viewpoints.")
    return viewpoints[..., _SWAP_SIN_COS]


def project_to_deepmind_viewpoint(viewpoints):
    """(..., 7) in the project's order -> DeepMind's order (x, y, z, sin yaw, cos yaw, sin pitch, cos pitch)."""
    return deepmind_to_project_viewpoint(viewpoints)


# ---------------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------------

def decode_jpeg(data, where="frame"):
    """JPEG bytes -> uint8 array (H, W, 3) at the size it was stored. `where` names the frame in errors."""
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:    # JPEG only, no format probing
            image.load()                                                  # truncated data fails here
            if image.mode != "RGB":
                image = image.convert("RGB")
            width, height = image.size
            pixels = image.tobytes()
    except Exception as error:                                            # PIL raises many kinds for bad bytes
        raise DatasetError(f"{where} is not a readable JPEG ({error}); "
                           f"convert that data again from its source.") from None
    return np.frombuffer(pixels, dtype=np.uint8).reshape(height, width, 3).copy()


_JPEG_TYPES = (bytes, bytearray, memoryview)            # np.bytes_ is a bytes subclass
_SEGMENT = struct.Struct(">BBH")                       # FF, marker, segment length (counting its 2 bytes)
_FRAME_HEADER = struct.Struct(">BHHB")                 # sample precision, height, width, components
_READ_SOF = frozenset((0xC0, 0xC1, 0xC2))              # baseline, extended sequential, progressive
_OTHER_SOF = frozenset((0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_NO_LENGTH = frozenset((0x01, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xFF))   # TEM, RST0-7, fill
_MISPLACED = {0x00: "a stuffed byte FF00", 0xD8: "a second start-of-image marker FFD8",
              0xD9: "the end-of-image marker FFD9"}
_SPECIAL = _READ_SOF | _OTHER_SOF | _NO_LENGTH | frozenset(_MISPLACED) | {0xDA}   # all but plain segments


def jpeg_info(data, where="frame"):
    """(height, width, components) of JPEG bytes, from a walk over its markers (no decoding).

    Checks the structure: the start-of-image marker FFD8 first; then length-prefixed segments, none
    running past the data; the first frame header SOF0/SOF1/SOF2 (FFC0-FFC2: baseline, extended,
    progressive; 8-bit samples, 1, 3 or 4 components, a non-zero size) gives the size; then a scan
    header SOS (FFDA); and the data ends with the end-of-image marker FFD9 (trailing zero bytes
    allowed). That catches truncation anywhere (the FFD9 is gone), other formats and damaged headers,
    but NOT damage inside the entropy-coded image data after SOS: only decoding (decode_jpeg) finds
    that. Raises DatasetError naming `where`.

    Frames from one encoder usually share their headers byte for byte (the same tables), so the last
    few headers that passed the walk are kept: data that starts with one of them would walk the same
    way, and only its end is checked. A 64x64 frame takes about 0.3 us so, 2 us with the walk (PIL
    takes 20 us to read the size alone, 100 us to decode)."""
    if not isinstance(data, _JPEG_TYPES):
        raise DatasetError(f"{where} is a {type(data).__name__}, not JPEG bytes; pass each frame as "
                           f"the JPEG bytes of the source data.")
    if type(data) is memoryview:
        data = data.tobytes()
    for headers, info in _known_headers:
        if data.startswith(headers):
            start = len(headers)                                        # the first byte of image data
            break
    else:
        info, start = _walk_headers(data, where)
        _remember_headers(data[:start], info)
    end = len(data)
    if data[-2:] != b"\xff\xd9":
        end = start + len(bytes(data[start:]).rstrip(b"\x00"))         # zero bytes after FFD9 are allowed
        if end - 2 < start or data[end - 2:end] != b"\xff\xd9":
            raise _not_jpeg(where, "it does not end with the end-of-image marker FFD9 (truncated)")
    if end - 2 <= start:
        raise _not_jpeg(where, "it has no image data between its scan header FFDA and its end FFD9")
    return info


_known_headers = ()        # ((bytes from FFD8 to the end of the FFDA segment, (height, width, components)), ...)
_KNOWN_HEADERS = 4         # how many are kept, the most recent first


def _remember_headers(headers, info):
    global _known_headers
    _known_headers = ((bytes(headers), info),) + _known_headers[:_KNOWN_HEADERS - 1]   # one atomic rebind


def _walk_headers(data, where):
    """jpeg_info's walk from FFD8 to the end of the first FFDA segment: ((height, width, components),
    index of the first byte of image data)."""
    size = len(data)
    if data[:2] != b"\xff\xd8":
        raise _not_jpeg(where, "it does not start with the start-of-image marker FFD8")
    info = None
    pos = 2
    unpack = _SEGMENT.unpack_from
    while True:                                                         # one segment per turn
        if pos + 4 > size:
            raise _not_jpeg(where, f"it is truncated in its headers, at byte {pos}")
        ff, marker, length = unpack(data, pos)
        if ff != 0xFF or marker in _SPECIAL:                            # rare: the common path is below
            if ff != 0xFF:
                raise _not_jpeg(where, f"byte {pos} should start a marker (FF) but is {ff:02X}")
            if marker == 0xDA:                                          # SOS: the image data follows
                break
            if marker in _NO_LENGTH:
                pos += 1 if marker == 0xFF else 2                       # FF: a fill byte before a marker
                continue
            if marker in _MISPLACED:
                raise _not_jpeg(where, f"it has {_MISPLACED[marker]} at byte {pos}, before any image data")
            if marker in _OTHER_SOF:
                raise _not_jpeg(where, f"it uses the JPEG process FF{marker:02X} (lossless, hierarchical or "
                                       f"arithmetic); only baseline, extended and progressive JPEGs are read")
            if info is not None:                                        # SOF0-SOF2 from here on
                raise _not_jpeg(where, f"it has a second frame header FF{marker:02X} at byte {pos}")
            if pos + 10 > size:
                raise _not_jpeg(where, f"it is truncated in its frame header, at byte {pos}")
            precision, height, width, components = _FRAME_HEADER.unpack_from(data, pos + 4)
            if length != 8 + 3 * components or components not in (1, 3, 4):
                raise _not_jpeg(where, f"its frame header FF{marker:02X} at byte {pos} is damaged "
                                       f"({components} components in {length} bytes)")
            if precision != 8 or height == 0 or width == 0:
                raise _not_jpeg(where, f"its frame header says {precision}-bit samples of {width}x{height} "
                                       f"pixels; only 8-bit JPEGs of a given size are read")
            info = (height, width, components)
        if length < 2:
            raise _not_jpeg(where, f"its FF{marker:02X} segment at byte {pos} has the impossible length {length}")
        if pos + 2 + length > size:
            raise _not_jpeg(where, f"its FF{marker:02X} segment at byte {pos} has the length {length}, past the "
                                   f"end of the data (truncated or damaged)")
        pos += 2 + length
    if info is None:
        raise _not_jpeg(where, f"its scan header FFDA at byte {pos} comes before any frame header FFC0-FFC2")
    start = pos + 2 + length                                            # the first byte of image data
    if start > size or length < 8 or length != 6 + 2 * data[pos + 4]:
        raise _not_jpeg(where, f"its scan header FFDA at byte {pos} is truncated or damaged")
    return info, start


def _not_jpeg(where, reason):
    return DatasetError(f"{where} is not a well-formed JPEG: {reason}; the data is damaged or not a JPEG, "
                        f"take it again from its source.")


def resize_frames(frames):
    """uint8 (V, H, W, 3) -> (V, 64, 64, 3). THE one place where frames change size: frames larger than
    64x64 are resized to 64x64 with PIL's bilinear filter, each view on its own (the view axis stays)."""
    views, height, width, _ = frames.shape
    if (height, width) == (IMAGE_SIZE, IMAGE_SIZE):
        return frames
    if height < IMAGE_SIZE or width < IMAGE_SIZE:
        raise DatasetError(f"frames are {height}x{width}, smaller than the model's {IMAGE_SIZE}x{IMAGE_SIZE}; "
                           f"use data with frames of at least {IMAGE_SIZE} pixels.")
    resized = [np.asarray(Image.fromarray(frame).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR))
               for frame in frames]
    return np.stack(resized)                       # (V, 64, 64, 3)


RawViews = collections.namedtuple("RawViews", [
    "jpegs",        # list of V JPEG bytes, as stored
    "cameras",      # float32 (V, 5) raw cameras
    "views",        # the V view indices inside the scene
    "where",        # the scene's name in error messages: "PATH scene i" or "PATH"
    "image_size",   # the frame side the file promises, or None where it promises none
])


def decode_views(raw):
    """RawViews -> uint8 array (V, 64, 64, 3): decodes each frame, checks its size against the size the
    file promised (or, where the file promises none, against the scene's first frame), then resize_frames."""
    frames = []
    for view, data in zip(raw.views, raw.jpegs):
        frame = decode_jpeg(data, where=f"{raw.where} view {view}")             # (H, W, 3)
        side = raw.image_size
        expected = (side, side) if side else (frames[0] if frames else frame).shape[:2]
        if frame.shape[:2] != expected:
            raise DatasetError(f"{raw.where} view {view} is {frame.shape[1]}x{frame.shape[0]} but should be "
                               f"{expected[1]}x{expected[0]}; convert that data again from its source.")
        if min(frame.shape[:2]) < IMAGE_SIZE:
            raise DatasetError(f"{raw.where} view {view} is {frame.shape[1]}x{frame.shape[0]}, smaller than the "
                               f"model's {IMAGE_SIZE}x{IMAGE_SIZE}; use data with frames of at least {IMAGE_SIZE} pixels.")
        frames.append(frame)
    return resize_frames(np.stack(frames))                                      # (V, 64, 64, 3)


# ---------------------------------------------------------------------------------------------
# Writing shards
# ---------------------------------------------------------------------------------------------

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
                           f"have shape {cameras.shape}; pass n scenes of S frames each and cameras of shape (n, S, 5).")
    bad = np.flatnonzero(~np.isfinite(cameras).all(axis=(1, 2)))
    if bad.size:
        raise DatasetError(f"cannot write {path}: the cameras of scene {bad[0]} hold NaN or inf; "
                           f"drop that scene or fix its cameras.")
    blobs = [frame for scene in frames for frame in scene]                  # (n*S,) JPEG bytes
    if not set(map(type, blobs)) <= {bytes}:                                 # bytearray, memoryview: their bytes
        blobs = [bytes(frame) if isinstance(frame, _JPEG_TYPES) else frame for frame in blobs]
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
            raise DatasetError(f"{path} scene {k // views} view {k % views} is a {width}x{height} JPEG; frames "
                               f"must be square JPEGs of at least {IMAGE_SIZE} pixels.")
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

    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb", buffering=_WRITE_BUFFER) as f:   # a crash leaves at most a hidden .tmp file behind
            f.write(MAGIC)
            f.write(struct.pack("<Q", len(header_bytes)))
            f.write(header_bytes)
            f.write(cameras.astype("<f4").tobytes())
            f.write(offsets.tobytes())
            f.writelines(blobs)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(error, OSError):
            raise DatasetError(f"cannot write {path} ({error.strerror}); check that its folder exists, "
                               f"is writable and has room.") from None
        raise


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
            raise DatasetError(f"scene {written} for {split_dir} has {len(scene_frames)} frames but cameras of "
                               f"shape {scene_cameras.shape}; pass one (x, y, z, yaw, pitch) camera per frame.")
        frames.append(list(scene_frames))
        cameras.append(scene_cameras)
        written += 1
        if len(frames) == scenes_per_shard:
            flush()
    if frames:
        flush()
    return written


# ---------------------------------------------------------------------------------------------
# Reading shards
# ---------------------------------------------------------------------------------------------

def _corrupt_shard(path, reason):
    return DatasetError(f"{path} is not a valid GQN shard: {reason}; delete it and convert its source again.")


def read_shard_header(path):
    """Read and check a shard's header. Returns the JSON keys plus the byte positions
    "cameras_offset", "offsets_offset", "blob_offset" and "file_size"."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            start = f.read(16)
            if len(start) < 16 or start[:8] != MAGIC:
                raise _corrupt_shard(path, f"it does not start with the magic {MAGIC!r}")
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
            header["blob_offset"] = header["offsets_offset"] + (frames + 1) * _OFFSET_BYTES
            header["file_size"] = file_size
            if header["blob_offset"] > file_size:
                raise _corrupt_shard(path, "it is shorter than its header says (truncated?)")
            f.seek(header["blob_offset"] - _OFFSET_BYTES)
            (blob_size,) = struct.unpack("<q", f.read(_OFFSET_BYTES))
            if header["blob_offset"] + blob_size != file_size:
                raise _corrupt_shard(path, f"its frames should end at byte {header['blob_offset'] + blob_size} "
                                           f"but the file has {file_size} bytes (truncated or appended to?)")
    except OSError as error:
        raise DatasetError(f"cannot read {path} ({error.strerror}); check that it exists and is readable.") from None
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
        self.starts = np.cumsum([0] + [h["scenes"] for h in self.headers]).tolist()  # first scene of each shard
        self._pid, self._open = None, collections.OrderedDict()                      # shard -> file descriptor

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
                                            header["cameras_offset"] + local * views_per_scene * _CAMERA_BYTES),
                                dtype="<f4").reshape(views_per_scene, 5)
        if not np.isfinite(cameras).all():
            raise DatasetError(f"{where} has NaN or inf cameras; convert that shard again from its source.")
        offsets = np.frombuffer(self._pread(shard, (views_per_scene + 1) * _OFFSET_BYTES,
                                            header["offsets_offset"] + local * views_per_scene * _OFFSET_BYTES),
                                dtype="<i8")
        blob_size = header["file_size"] - header["blob_offset"]
        if offsets[0] < 0 or offsets[-1] > blob_size or np.any(np.diff(offsets) < 0):
            raise _corrupt_shard(path, f"the frame offsets of scene {local} are out of order or out of the file")
        if views is None:
            views = range(views_per_scene)
            scene = self._pread(shard, int(offsets[-1] - offsets[0]), header["blob_offset"] + int(offsets[0]))
            ends = (offsets - offsets[0]).tolist()
            jpegs = [scene[ends[v]:ends[v + 1]] for v in views]
        else:
            views = list(views)
            if any(not 0 <= v < views_per_scene for v in views):
                raise IndexError(f"views {views} are out of range for {where} with {views_per_scene} views")
            jpegs = [self._pread(shard, int(offsets[v + 1] - offsets[v]), header["blob_offset"] + int(offsets[v]))
                     for v in views]
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


# ---------------------------------------------------------------------------------------------
# Folders converted by the original torch-gqn: one scene per file, {i}.pt.gz or {i}.pt
# ---------------------------------------------------------------------------------------------
# Such a file is (optionally gzip'd) torch.save output of a namedtuple Scene(frames, cameras) from
# the converter's __main__: frames a numpy object array of S JPEG bytes, cameras float32 (1, S, 5)
# raw. It is read with a restricted unpickler that builds only those few objects and refuses any
# other global, so a crafted file cannot run code. Both torch serializations are read: the legacy
# one (a run of pickles, storages after the last) and the zip one (data.pkl + data/<key>).

LEGACY_PATTERN = re.compile(r"(\d+)\.pt(\.gz)?")
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C      # the first pickle of a legacy torch.save file
LegacyScene = collections.namedtuple("LegacyScene", ["frames", "cameras"])   # stands in for __main__.Scene
_STORAGE_DTYPES = {"FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
                   "BFloat16Storage": torch.bfloat16, "ByteStorage": torch.uint8, "CharStorage": torch.int8,
                   "ShortStorage": torch.int16, "IntStorage": torch.int32, "LongStorage": torch.int64,
                   "BoolStorage": torch.bool}


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
        raise DatasetError(f"{self.path} asks to load {module}.{name}, which no torch-gqn scene file needs, so it "
                           f"was refused without running anything (the file may be crafted to run code); delete it or convert the scene again.")

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
    """A torch-gqn scene file ({i}.pt.gz or {i}.pt, gzip'd or not) -> (list of S JPEG bytes, cameras float32 (S, 5))."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise DatasetError(f"cannot read {path} ({error.strerror}); check that it exists and is readable.") from None
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
        raise DatasetError(f"{path} is not a readable torch-gqn scene file ({type(error).__name__}: {error}); "
                           f"delete it or convert the scene again.") from None
    if cameras.size != 5 * len(frames):
        raise DatasetError(f"{path} holds {len(frames)} frames but cameras of shape {cameras.shape}; "
                           f"convert the scene again so that each frame has one (x, y, z, yaw, pitch) camera.")
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


# ---------------------------------------------------------------------------------------------
# Opening a split folder
# ---------------------------------------------------------------------------------------------

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
    raise DatasetError(f"data folder {root_dir} holds no shard-*.gqn files and no torch-gqn {{i}}.pt(.gz) files"
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
        frames = np.ascontiguousarray(decode_views(raw).transpose(0, 3, 1, 2))  # (S, 64, 64, 3) -> (S, 3, 64, 64)
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

    def __init__(self, root_dir, skip_bad_scenes=False):
        self.root_dir = os.fspath(root_dir)
        self.scenes = open_split(root_dir)
        self.num_views = self.scenes.num_views
        self.skip_bad_scenes = skip_bad_scenes

    def __len__(self):
        return len(self.scenes)

    def __getitem__(self, key):
        """With skip_bad_scenes, a scene that fails its checks gives None (see collate_views)."""
        try:
            return self._read(key)
        except DatasetError:
            if self.skip_bad_scenes:
                return None
            raise

    def _read(self, key):
        index, views = key
        raw = self.scenes.read(index, views)
        # the layout change is done by numpy: torch's strided uint8 copy is ~50x slower on small tensors
        frames = np.ascontiguousarray(decode_views(raw).transpose(0, 3, 1, 2))  # (V, 64, 64, 3) -> (V, 3, 64, 64)
        return torch.from_numpy(frames), torch.from_numpy(raw_to_viewpoint(raw.cameras))   # (V, 7)


# ---------------------------------------------------------------------------------------------
# Sampling context and query views (paper, Algorithm S1)
# ---------------------------------------------------------------------------------------------

_CONTEXT_COUNTS = {"shepard-metzler": 15, "room": 5, "jaco": 7, "labyrinth": 20}   # K per dataset (spec 2)
_ORDER_STREAM, _BATCH_STREAM, _EVAL_STREAM = 0, 1, 2          # separate random streams under one seed


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
        raise DatasetError(f"{what} {context} needs {context + 1} views per scene (context and query) but the "
                           f"scenes have {num_views}; pass a {what} between 1 and {num_views - 1}.")
    if world_size < 1 or not 0 <= rank < world_size or batch_size % world_size:
        raise DatasetError(f"batch size {batch_size} cannot be split over {world_size} processes as rank "
                           f"{rank}; pass a batch size divisible by the world size and 0 <= rank < world size.")


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

    def __init__(self, num_scenes, num_views, batch_size, max_context, seed, rank=0, world_size=1, start_batch=0,
                 min_context=1):
        _check_sampler_args(num_scenes, num_views, batch_size, max_context, seed, rank, world_size, "max_context")
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
            rng = np.random.default_rng([self.seed, _ORDER_STREAM, epoch])
            self._epoch, self._order = epoch, rng.permutation(self.num_scenes)
        return self._order

    def global_batch(self, k):
        """Global batch k -> (scenes int (B,), views int (B, M + 1)); the last view of each row is the query."""
        epoch, position = divmod(k, self.batches_per_epoch)
        scenes = self.scene_order(epoch)[position * self.batch_size:(position + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, _BATCH_STREAM, k])
        m = int(rng.integers(self.min_context, self.max_context + 1))              # M ~ U{min..K}
        views = np.argsort(rng.random((self.batch_size, self.num_views)), axis=1)[:, :m + 1]   # distinct per scene
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
        rng = np.random.default_rng([self.seed, _EVAL_STREAM, scene])
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

def collate_views(items):
    """[(frames (V, 3, 64, 64), viewpoints (V, 7)) or None] -> (frames (B, V, ...), viewpoints (B, V, 7),
    number of None items left out). Stacked by numpy: torch's stack of small uint8 tensors in the main
    process can take hundreds of ms when its threads compete with training for the cores."""
    good = [item for item in items if item is not None]
    if not good:
        return None, None, len(items)
    frames = torch.from_numpy(np.stack([f.numpy() for f, _ in good]))
    viewpoints = torch.from_numpy(np.stack([v.numpy() for _, v in good]))
    return frames, viewpoints, len(items) - len(good)


def collate_pairs(items):
    """Evaluation batches: (frames (B, V, 3, 64, 64), viewpoints (B, V, 7)), stacked as collate_views."""
    return collate_views(items)[:2]


def _quiet_worker(worker_id):
    """Ctrl-C reaches every process of the terminal, and SIGTERM every process of a job when Slurm's time
    is up or `pkill -f train.py` runs; the workers leave both to the main process, which saves a
    checkpoint and shuts them down (a worker killed first would crash the main process mid-save).
    They still stop with their parent: DataLoader workers exit when the main process is gone."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(root_dir, batch_size, max_context, seed, workers, start_batch=0, rank=0, world_size=1,
                pin_memory=False, skip_bad_scenes=False, min_context=1):
    """Training loader over a split folder: an endless stream of batches (frames uint8 (B, M+1, 3, 64, 64),
    viewpoints float32 (B, M+1, 7), skipped), B = batch_size // world_size, the last view of each scene
    the query, M ~ Uniform{min_context..max_context}. Batch t is the same for any number of workers;
    start_batch=t resumes there. A scene that
    fails its checks stops the run with a DatasetError, or with skip_bad_scenes is left out of its batch
    and counted in `skipped`."""
    dataset = SceneViews(root_dir, skip_bad_scenes=skip_bad_scenes)
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
    sampler = FixedContextSampler(num_scenes, dataset.num_views, batch_size, num_context, seed, rank, world_size)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory,
                      persistent_workers=workers > 0)
