"""Image grids and image files (PNG, animated GIF) with Pillow; no torchvision needed."""

import numpy as np
import torch
from PIL import Image

from atomic_file import AtomicFile


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


PAD_GREY = 0.5    # the gaps between the tiles of a comparison grid, so black backgrounds do not run together


def comparison_grid(columns):
    """The one comparison grid (final.png, sample.py's grid and orbit frames): columns, a list of images
    (B, 3, H, W) in [0, 1] (context views, truth, reconstruction, samples, ...) -> one (3, H', W') image
    with one row per scene and grey gaps between the tiles."""
    tiles = torch.stack([c.detach().float().cpu() for c in columns], dim=1)     # (B, columns, 3, H, W)
    flat = tiles.flatten(0, 1)
    grid = make_grid(flat, nrow=len(columns))
    inside = make_grid(torch.ones_like(flat), nrow=len(columns))            # 1 on tiles, 0 in the gaps
    return grid + (1 - inside) * PAD_GREY


def to_uint8_image(chw):
    """(3, H, W) floats in [0, 1] -> (H, W, 3) uint8."""
    return (chw.detach().float().clamp(0, 1).cpu().permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def save_png(chw, path):
    """Write a (3, H, W) image in [0, 1] as PNG, atomically (so a kill never leaves half a file)."""
    with AtomicFile(path) as f:
        Image.fromarray(to_uint8_image(chw)).save(f, format="PNG")


def save_gif(frames, path, ms_per_frame=80):
    """Write frames, each (3, H, W) in [0, 1], as a looping GIF whose frames share ONE 256-colour palette
    (quantizing each frame on its own makes colours that stay put, such as context views, flicker).
    Written atomically. Pillow drops a frame identical to the one
    before it (adding its time to that one), so a GIF holds fewer frames only where the views repeat."""
    pictures = [to_uint8_image(f) for f in frames]                            # (H, W, 3) uint8 each
    every = max(1, len(pictures) // 12)                                # the palette from up to ~12 frames
    palette = Image.fromarray(np.concatenate(pictures[::every], axis=0)).quantize(
        256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    indexed = [Image.fromarray(p).quantize(palette=palette, dither=Image.Dither.NONE) for p in pictures]
    with AtomicFile(path) as f:
        indexed[0].save(f, format="GIF", save_all=True, append_images=indexed[1:], duration=ms_per_frame,
                        loop=0)
