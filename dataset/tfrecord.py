"""TFRecord files of tf.train.Example records, written and read in pure Python (no TensorFlow).

TFRecord framing of one record (little-endian):
    uint64  length of data
    uint32  masked crc32c of those 8 length bytes
    bytes   data
    uint32  masked crc32c of data
with mask(crc) = (((crc >> 15) | (crc << 17)) + 0xa282ead8) mod 2^32 and crc32c the Castagnoli CRC.

The Example protobuf, hand-encoded (field numbers of tensorflow/core/example/{example,feature}.proto):
    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }   (each entry: { string key = 1; Feature value = 2; })
    Feature  { oneof { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }  FloatList { repeated float value = 1 [packed]; }
    Int64List { repeated int64 value = 1 [packed]; }
The parser also accepts unpacked floats and int64s, as protobuf readers must.

DeepMind's gqn-datasets records: `frames` (bytes list of S JPEGs) and `cameras` (float list of S*5:
per view x, y, z, yaw, pitch); encode_gqn_example / decode_gqn_example build and read them.
"""
import functools
import os
import struct

import numpy as np

from atomic_file import AtomicFile

_CRC32C_POLY = 0x82F63B78  # Castagnoli polynomial, bit-reflected
_MASK_DELTA = 0xA282EAD8
_CHUNK = 64                # bytes per lane of the vectorised crc32c


class TFRecordError(ValueError):
    """A TFRecord file or Example record that is truncated, corrupt or not what the caller expects."""


# ----------------------------------------------------------------------------- crc32c

def _make_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC32C_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _make_table()
_TABLE_NP = np.array(_TABLE, dtype=np.uint32)


def _crc_update(crc, data):
    """The raw register update of crc32c over data (no initial or final inversion), byte by byte."""
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


@functools.lru_cache(maxsize=None)
def _shift_tables(n_bytes):
    """4 tables (4, 256) giving the register after n_bytes zero bytes, by byte of the register (it is
    linear)."""
    tables = np.zeros((4, 256), dtype=np.uint32)
    zeros = bytes(n_bytes)
    for lane in range(4):
        for bit in range(8):
            tables[lane, 1 << bit] = _crc_update(1 << (8 * lane + bit), zeros)
        for value in range(1, 256):  # fill the rest by linearity (xor of the single-bit columns)
            low = value & -value
            tables[lane, value] = tables[lane, low] ^ tables[lane, value ^ low]
    return tables


def crc32c(data):
    """CRC-32C (Castagnoli) of bytes; crc32c(b"123456789") == 0xE3069283.

    Long inputs are cut into lanes of _CHUNK bytes whose raw CRCs are computed side by side with
    numpy and then chained: the register after lane k is shift(register before it) xor crc(lane k)."""
    data = memoryview(bytes(data)).cast("B")
    n = len(data)
    lanes = n // _CHUNK
    if lanes < 8:
        return _crc_update(0xFFFFFFFF, data) ^ 0xFFFFFFFF
    head = n - lanes * _CHUNK
    crc = _crc_update(0xFFFFFFFF, data[:head])
    block = np.frombuffer(data[head:], dtype=np.uint8).reshape(lanes, _CHUNK)
    lane_crc = np.zeros(lanes, dtype=np.uint32)
    for i in range(_CHUNK):
        lane_crc = _TABLE_NP[(lane_crc ^ block[:, i]) & 0xFF] ^ (lane_crc >> 8)
    t0, t1, t2, t3 = (t.tolist() for t in _shift_tables(_CHUNK))
    for part in lane_crc.tolist():
        crc = t0[crc & 0xFF] ^ t1[(crc >> 8) & 0xFF] ^ t2[(crc >> 16) & 0xFF] ^ t3[crc >> 24] ^ part
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
    """TFRecord's masked crc32c of bytes."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


# ----------------------------------------------------------------------------- TFRecord framing

def frame_record(data):
    """One record's bytes as they appear in a TFRecord file."""
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", masked_crc32c(length)) + bytes(data)
            + struct.pack("<I", masked_crc32c(data)))


class TFRecordWriter:
    """Writes records to a TFRecord file atomically (atomic_file.AtomicFile): a hidden temporary file renamed
    into place on close().

    with TFRecordWriter(path) as w: w.write(record_bytes)    (an exception inside leaves no file)"""

    def __init__(self, path):
        self.path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._file = AtomicFile(self.path)
        self.records = 0

    def write(self, data):
        self._file.file.write(frame_record(data))
        self.records += 1

    def close(self):
        if self._file is not None:
            file, self._file = self._file, None
            file.commit()

    def abort(self):
        if self._file is not None:
            file, self._file = self._file, None
            file.discard()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_tfrecord(path, records):
    """Write an iterable of record bytes as one TFRecord file; returns the number of records."""
    with TFRecordWriter(path) as writer:
        for data in records:
            writer.write(data)
    return writer.records


def iter_tfrecord(path, check_crc=True):
    """Yield the records (bytes) of a TFRecord file, checking both CRCs of each.

    Raises TFRecordError naming the file and the record index on truncation or a CRC mismatch."""
    path = os.fspath(path)
    try:
        f = open(path, "rb")
    except OSError as error:
        raise TFRecordError(f"cannot open TFRecord file {path} ({error.strerror}); check the path.") from None
    with f:
        index = 0
        while True:
            head = f.read(12)
            if not head:
                return
            if len(head) < 12:
                raise TFRecordError(f"{path}: record {index} is truncated (its 12-byte length header has "
                                    f"{len(head)} bytes); the file is incomplete, download or write it "
                                    f"again.")
            (length,) = struct.unpack("<Q", head[:8])
            (length_crc,) = struct.unpack("<I", head[8:])
            if check_crc and masked_crc32c(head[:8]) != length_crc:
                raise TFRecordError(f"{path}: record {index} has a corrupt length (CRC mismatch); "
                                    f"the file is damaged, download or write it again.")
            body = f.read(length + 4)
            if len(body) < length + 4:
                raise TFRecordError(f"{path}: record {index} is truncated ({len(body)} of {length + 4} bytes "
                                    f"present); the file is incomplete, download or write it again.")
            data = body[:length]
            (data_crc,) = struct.unpack("<I", body[length:])
            if check_crc and masked_crc32c(data) != data_crc:
                raise TFRecordError(f"{path}: record {index} is corrupt (data CRC mismatch); "
                                    f"the file is damaged, download or write it again.")
            yield data
            index += 1


# ----------------------------------------------------------------------------- protobuf wire format

def _varint(value):
    value &= 0xFFFFFFFFFFFFFFFF  # negative int64 as 10-byte two's complement, as protobuf does
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number, payload):
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _read_varint(buf, pos, end):
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise TFRecordError("malformed protobuf: a varint runs past its message")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _iter_fields(buf, pos, end):
    """Yield (field number, wire type, value or (start, stop) of a length-delimited payload) of a message."""
    while pos < end:
        key, pos = _read_varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos, end)
        elif wire == 1:
            if pos + 8 > end:
                raise TFRecordError("malformed protobuf: a 64-bit field runs past its message")
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _read_varint(buf, pos, end)
            if pos + length > end:
                raise TFRecordError("malformed protobuf: a length-delimited field runs past its message")
            value, pos = (pos, pos + length), pos + length
        elif wire == 5:
            if pos + 4 > end:
                raise TFRecordError("malformed protobuf: a 32-bit field runs past its message")
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise TFRecordError(f"malformed protobuf: unsupported wire type {wire}")
        yield number, wire, value


def _signed64(value):
    return value - (1 << 64) if value >= 1 << 63 else value


# ----------------------------------------------------------------------------- tf.train.Example

def encode_example(features):
    """Serialise a tf.train.Example. features: dict name -> (kind, values) with kind "bytes"
    (list of bytes), "float" (floats, stored as float32) or "int64" (ints). Keys are written sorted."""
    entries = b""
    for name in sorted(features):
        kind, values = features[name]
        if kind == "bytes":
            inner = b"".join(_field(1, bytes(v)) for v in values)
            feature = _field(1, inner)
        elif kind == "float":
            packed = np.asarray(values, dtype="<f4").ravel().tobytes()
            feature = _field(2, _field(1, packed) if packed else b"")
        elif kind == "int64":
            packed = b"".join(_varint(int(v)) for v in np.asarray(values, dtype=np.int64).ravel())
            feature = _field(3, _field(1, packed) if packed else b"")
        else:
            raise TFRecordError(f"feature {name!r} has kind {kind!r}; use 'bytes', 'float' or 'int64'.")
        entries += _field(1, _field(1, name.encode("utf-8")) + _field(2, feature))
    return _field(1, entries)


def parse_example(data):
    """Parse a serialised tf.train.Example -> dict name -> (kind, values): list of bytes,
    float32 array or int64 array."""
    buf = memoryview(bytes(data))
    features = {}
    for number, wire, value in _iter_fields(buf, 0, len(buf)):
        if number != 1 or wire != 2:
            continue  # unknown Example field
        for f_number, f_wire, entry in _iter_fields(buf, *value):
            if f_number != 1 or f_wire != 2:
                continue
            name, feature = "", None
            for e_number, e_wire, e_value in _iter_fields(buf, *entry):
                if e_number == 1 and e_wire == 2:
                    name = bytes(buf[e_value[0]:e_value[1]]).decode("utf-8")
                elif e_number == 2 and e_wire == 2:
                    feature = _parse_feature(buf, *e_value)
            features[name] = feature if feature is not None else ("bytes", [])
    return features


def _parse_feature(buf, start, stop):
    kind, values = "bytes", []
    for number, wire, value in _iter_fields(buf, start, stop):
        if wire != 2 or number not in (1, 2, 3):
            continue
        kind = {1: "bytes", 2: "float", 3: "int64"}[number]
        values = []
        floats, ints = [], []
        for _, v_wire, v in _iter_fields(buf, *value):
            if kind == "bytes" and v_wire == 2:
                values.append(bytes(buf[v[0]:v[1]]))
            elif kind == "float" and v_wire == 2:      # packed
                floats.append(np.frombuffer(buf[v[0]:v[1]], dtype="<f4"))
            elif kind == "float" and v_wire == 5:      # unpacked
                floats.append(np.frombuffer(v, dtype="<f4"))
            elif kind == "int64" and v_wire == 2:      # packed
                pos = v[0]
                while pos < v[1]:
                    n, pos = _read_varint(buf, pos, v[1])
                    ints.append(_signed64(n))
            elif kind == "int64" and v_wire == 0:      # unpacked
                ints.append(_signed64(v))
        if kind == "float":
            values = np.concatenate(floats).astype(np.float32) if floats else np.zeros(0, np.float32)
        elif kind == "int64":
            values = np.array(ints, dtype=np.int64)
    return kind, values


def encode_gqn_example(frames, cameras):
    """DeepMind's gqn-datasets record: frames (S JPEG bytes), cameras (S, 5) -> serialised Example."""
    cameras = np.asarray(cameras, dtype=np.float32)
    if cameras.shape != (len(frames), 5):
        raise TFRecordError(f"{len(frames)} frames need cameras of shape ({len(frames)}, 5), got "
                            f"{cameras.shape}.")
    return encode_example({"frames": ("bytes", list(frames)), "cameras": ("float", cameras.ravel())})


def decode_gqn_example(data, where="record"):
    """Serialised gqn-datasets Example -> (frames list of S bytes, cameras float32 (S, 5))."""
    features = parse_example(data)
    frames = features.get("frames")
    cameras = features.get("cameras")
    if frames is None or cameras is None or frames[0] != "bytes" or cameras[0] != "float":
        raise TFRecordError(f"{where} is not a gqn-datasets Example (it needs a bytes feature 'frames' and a "
                            f"float feature 'cameras'; it has {sorted(features)}).")
    frames, cameras = frames[1], cameras[1]
    if len(cameras) != 5 * len(frames):
        raise TFRecordError(f"{where} has {len(frames)} frames but {len(cameras)} camera numbers "
                            f"(expected {5 * len(frames)}).")
    return frames, cameras.reshape(len(frames), 5)


def tfrecord_name(index, count):
    """File name of shard index (from 1) of count: '<i>-of-<n>.tfrecord', both zero-padded to the width of
    n."""
    width = len(str(count))
    return f"{index:0{width}d}-of-{count:0{width}d}.tfrecord"
