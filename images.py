"""Image grids and image files (PNG, animated GIF) with Pillow; no torchvision needed."""

import os

import numpy as np
import torch
from PIL import Image


def make_grid(images, nrow, pad=2):
    """images (N, 3, H, W) floats in [0, 1] -> one (3, rows*(H+pad)+pad, nrow*(W+pad)+pad) grid, row-major."""
    images = images.detach().float().clamp(0, 1).cpu()
    N, C, H, W = images.shape
    rows = (N + nrow - 1) // nrow
    grid = torch.zeros(C, rows * (H + pad) + pad, nrow * (W + pad) + pad)
    for i in range(N):
        y, x = pad + (i // nrow) * (H + pad), pad + (i % nrow) * (W + pad)
        grid[:, y:y + H, x:x + W] = images[i]
    return grid


def to_uint8_image(chw):
    """(3, H, W) floats in [0, 1] -> (H, W, 3) uint8."""
    return (chw.detach().float().clamp(0, 1).cpu().permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def save_png(chw, path):
    """Write a (3, H, W) image in [0, 1] as PNG, atomically (so a kill never leaves half a file)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    Image.fromarray(to_uint8_image(chw)).save(tmp, format="PNG")
    os.replace(tmp, path)


def save_gif(frames, path, ms_per_frame=80):
    """Write frames, each (3, H, W) in [0, 1], as a looping animated GIF."""
    pictures = [Image.fromarray(to_uint8_image(f)) for f in frames]
    tmp = f"{path}.tmp-{os.getpid()}"
    pictures[0].save(tmp, format="GIF", save_all=True, append_images=pictures[1:],
                     duration=ms_per_frame, loop=0)
    os.replace(tmp, path)
