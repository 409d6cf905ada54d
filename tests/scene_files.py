"""Small scene files for the data tests: JPEG frames and scenes of random cameras."""

import io

import numpy as np
from PIL import Image

from conftest import encode_jpeg as encode   # noqa: F401  (the tests' one JPEG encoder, named so here)


def jpeg(color, size=64, seed=0):
    """A small JPEG frame: a coloured square on noise, so views differ and decoding is not trivial."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    pixels[size // 4: size // 2, size // 4: size // 2] = color
    return encode(pixels, quality=90)


def make_scenes(n, views=5, size=64, seed=0):
    """n scenes of `views` JPEG frames and raw cameras (views, 5)."""
    rng = np.random.default_rng(seed)
    scenes = []
    for i in range(n):
        frames = [jpeg(rng.integers(0, 256, 3), size, seed=1000 * seed + 10 * i + v) for v in range(views)]
        cameras = rng.uniform(-3, 3, (views, 5)).astype(np.float32)
        scenes.append((frames, cameras))
    return scenes


def pil_decode(data):
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def noise(size, mode="RGB", seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


def one_sentence(error, path):
    message = str(error.value)
    assert str(path) in message, message
    assert "\n" not in message and message.endswith("."), message
    return message
