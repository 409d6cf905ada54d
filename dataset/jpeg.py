"""Frames: JPEG decoding, the structural checks that need no decoding, and the one resize.

Frames are decoded with PIL (decode_jpeg); jpeg_info checks a frame's JPEG structure and reads its
size without decoding (write_shard, the converter). Frames larger than 64x64 (mazes 84, rooms with
object rotations 128) are resized to 64x64, bilinear (PIL), view by view, in resize_frames and
nowhere else.

RawViews is what a reader hands over: the stored JPEG bytes of some views of one scene, their raw
cameras, and where they came from (for messages); decode_views turns it into 64x64 frames.
"""

import collections
import io
import struct

import numpy as np
from PIL import Image

from dataset.errors import DatasetError

IMAGE_SIZE = 64                       # the model's frame side


def decode_jpeg(data, where="frame"):
    """JPEG bytes -> uint8 array (H, W, 3) at the size it was stored. `where` names the frame in errors."""
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:    # JPEG only, no format probing
            image.load()                                                  # truncated data fails here
            if image.mode != "RGB":
                image = image.convert("RGB")
            width, height = image.size
            pixels = image.tobytes()
    except Exception as error:
        # PIL raises many kinds for bad bytes
        raise DatasetError(f"{where} is not a readable JPEG ({error}); "
                           f"convert that data again from its source.") from None
    return np.frombuffer(pixels, dtype=np.uint8).reshape(height, width, 3).copy()


JPEG_TYPES = (bytes, bytearray, memoryview)            # np.bytes_ is a bytes subclass
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
    way, and only its end is checked (much cheaper than the walk, which is much cheaper than PIL's
    reading of the size, let alone its decoding)."""
    if not isinstance(data, JPEG_TYPES):
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


# ((bytes from FFD8 to the end of the FFDA segment, (height, width, components)), ...)
_known_headers = ()
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
            raise _not_jpeg(where, f"its FF{marker:02X} segment at byte {pos} has the impossible length "
                                   f"{length}")
        if pos + 2 + length > size:
            raise _not_jpeg(where, f"its FF{marker:02X} segment at byte {pos} has the length {length}, "
                                   f"past the end of the data (truncated or damaged)")
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
        raise DatasetError(f"frames are {height}x{width}, smaller than the model's "
                           f"{IMAGE_SIZE}x{IMAGE_SIZE}; "
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
            raise DatasetError(f"{raw.where} view {view} is {frame.shape[1]}x{frame.shape[0]}, smaller than "
                               f"the model's {IMAGE_SIZE}x{IMAGE_SIZE}; "
                               f"use data with frames of at least {IMAGE_SIZE} pixels.")
        frames.append(frame)
    return resize_frames(np.stack(frames))                                      # (V, 64, 64, 3)
