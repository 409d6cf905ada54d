"""dataset/jpeg.py: decoding frames and the structural JPEG check."""

import numpy as np
import pytest
from PIL import Image

from dataset.errors import DatasetError
from dataset.jpeg import decode_jpeg, jpeg_info
from scene_files import encode, jpeg, noise


def test_decode_jpeg_gives_rgb_and_refuses_truncated_data():
    frame = decode_jpeg(encode(Image.new("L", (64, 64), 77)))
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8 and (frame == 77).all()
    data = jpeg((200, 10, 10))
    with pytest.raises(DatasetError, match="the frame is not a readable JPEG"):
        decode_jpeg(data[:len(data) // 2], where="the frame")


# --- jpeg_info: the structural JPEG check ------------------------------------------------------

def image_data_start(data):
    """Index of the first byte after the first scan header (FFDA segment), found independently."""
    at = 2
    while data[at + 1] != 0xDA:
        at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
    return at + 2 + int.from_bytes(data[at + 2:at + 4], "big")


@pytest.mark.parametrize("size", [64, 84, 128])
def test_jpeg_info_reads_size_and_components_of_good_frames(size):
    frames = {"baseline": encode(noise(size), quality=90),
              "progressive": encode(noise(size), progressive=True),
              "optimized tables": encode(noise(size), optimize=True),
              "4:4:4": encode(noise(size), subsampling=0),
              "with exif": encode(noise(size), exif=Image.Exif()), "grey": encode(noise(size, "L")),
              "cmyk": encode(noise(size, "CMYK")), "zero padded": encode(noise(size)) + bytes(6)}
    components = {"grey": 1, "cmyk": 4}
    for name, data in frames.items():
        for _ in range(2):                                # walked, then from the kept headers
            assert jpeg_info(data, name) == (size, size, components.get(name, 3)), name
        assert decode_jpeg(data).shape == (size, size, 3)            # the loader agrees
    assert jpeg_info(bytearray(frames["baseline"])) == (size, size, 3)
    assert jpeg_info(memoryview(frames["baseline"])) == (size, size, 3)
    wide = encode(Image.new("RGB", (size + 16, size), (9, 9, 9)))
    assert jpeg_info(wide) == (size, size + 16, 3)                    # (height, width, components)


def test_jpeg_info_refuses_every_truncation():
    for data in (encode(noise(64)), encode(noise(84), progressive=True)):
        jpeg_info(data)                                               # its headers are kept from here on
        # in the headers and in the image data
        for cut in range(len(data)):
            with pytest.raises(DatasetError) as error:
                jpeg_info(data[:cut], "scene 3 view 2")
            message = str(error.value)
            assert message.startswith("scene 3 view 2 is not a well-formed JPEG: "), message
            assert "\n" not in message, message
        with pytest.raises(DatasetError, match="does not end with the end-of-image marker FFD9"):
            jpeg_info(data[:len(data) // 2] + bytes(100))             # cut, then zero padded


def test_jpeg_info_refuses_missing_soi_or_eoi_and_other_formats():
    data = encode(noise(64))
    cases = {"no SOI": (data[2:], "does not start with the start-of-image marker FFD8"),
             "SOI damaged": (b"\xff\xd9" + data[2:], "does not start with the start-of-image marker FFD8"),
             "no EOI": (data[:-2], "does not end with the end-of-image marker FFD9"),
             "EOI damaged": (data[:-1] + b"\xd8", "does not end with the end-of-image marker FFD9"),
             "no image data": (data[:image_data_start(data)] + b"\xff\xd9", "has no image data between"),
             "PNG": (b"\x89PNG\r\n\x1a\n" + bytes(60), "does not start with the start-of-image marker"),
             "empty": (b"", "does not start with the start-of-image marker"),
             "text": (b"hello, this is not an image", "does not start with the start-of-image marker"),
             "EOI in headers": (data[:2] + b"\xff\xd9" + data[2:], "the end-of-image marker FFD9 at byte 2"),
             "length past the end": (data[:4] + b"\xff\xf0" + data[6:],
                                     "FFE0 segment at byte 2 has the length 65520"),
             "garbage between segments": (data[:20] + b"\x00" + data[20:], "byte 20 should start a marker"),
             "lossless JPEG": (data.replace(b"\xff\xc0", b"\xff\xc3", 1), "the JPEG process FFC3"),
             "no frame header": (data.replace(b"\xff\xc0", b"\xff\xe5", 1), "comes before any frame header")}
    for name, (bad, reason) in cases.items():
        with pytest.raises(DatasetError) as error:
            jpeg_info(bad, "the frame")
        assert str(error.value).startswith("the frame is not a well-formed JPEG: "), name
        assert reason in str(error.value) and str(error.value).endswith("."), (name, str(error.value))
    for not_bytes in ("a string", None, [255, 216]):
        with pytest.raises(DatasetError, match="the frame is a .*, not JPEG bytes"):
            jpeg_info(not_bytes, "the frame")


def test_jpeg_info_leaves_damaged_image_data_to_the_decoder():
    # damage after the scan header is not structural: jpeg_info passes it, decode_jpeg refuses it
    data = encode(noise(64))
    middle = (image_data_start(data) + len(data)) // 2
    bad = data[:middle] + b"\xff\xd8" + data[middle + 2:]
    assert jpeg_info(bad) == (64, 64, 3)
    with pytest.raises(DatasetError, match="is not a readable JPEG"):
        decode_jpeg(bad)
