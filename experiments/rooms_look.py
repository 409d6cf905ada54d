"""Do the built-in rooms look like DeepMind's rooms_ring_camera? Their statistics beside the real
frames', and a figure.

Prints dataset/rooms.py rooms_statistics (band brightness of rows 0-20, 21-42, 43-63; the fraction of
saturated and of black pixels) of the real frames and of the built-in rooms' decoded JPEG frames, and
writes a figure, each frame upscaled x2 (nearest): rows of real frames as stored; the same with red and
blue exchanged (the stored frames show every named colour so, as images written in BGR order would;
the statistics do not change under the exchange); rows of built-in frames.

    python experiments/rooms_look.py [--scenes 200] [--seed 0] [--split train]
        [--reference ../shared/reference/rooms_ring_camera] [--out assets/rooms-vs-real.png]

The real frames are read at run time from --reference (25 frames of DeepMind's data, not shipped
with the project); the figure holds the first 10 of them.
"""

import argparse
import glob
import os
import sys

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dataset import rooms  # noqa: E402
from dataset.jpeg import decode_jpeg  # noqa: E402

FIGURE_COLUMNS = 5
FIGURE_ROWS = 2           # of each kind
SCALE = 2
GAP = 4                   # pixels between frames, and twice that between the real and built-in rows


def read_reference(folder):
    """The real frames in folder (*.png), uint8 (N, 64, 64, 3), in name order."""
    paths = sorted(glob.glob(os.path.join(folder, "*.png")))
    if not paths:
        raise SystemExit(f"error: no real frames (*.png) in {folder}; pass --reference with the folder "
                         f"of real rooms_ring_camera frames.")
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def built_in_frames(scenes, seed, split):
    """The decoded JPEG frames of the first `scenes` built-in rooms of a split, uint8
    (scenes, 10, 64, 64, 3)."""
    return np.stack([np.stack([decode_jpeg(f) for f in frames])
                     for frames, _ in rooms.render_scenes(seed, split, 0, scenes)])


def grid(frames, columns):
    """Frames (N, H, W, 3) -> one image of rows of `columns` frames, upscaled SCALE x, GAP apart (white)."""
    frames = np.repeat(np.repeat(frames, SCALE, axis=1), SCALE, axis=2)
    n, h, w, _ = frames.shape
    rows = -(-n // columns)
    out = np.full((rows * (h + GAP) - GAP, columns * (w + GAP) - GAP, 3), 255, np.uint8)
    for k, frame in enumerate(frames):
        r, c = divmod(k, columns)
        out[r * (h + GAP):r * (h + GAP) + h, c * (w + GAP):c * (w + GAP) + w] = frame
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--scenes", type=int, default=200, help="built-in scenes measured")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="train")
    p.add_argument("--reference",
                   default=os.path.join(ROOT, "..", "shared", "reference", "rooms_ring_camera"))
    p.add_argument("--out", default=os.path.join(ROOT, "assets", "rooms-vs-real.png"))
    args = p.parse_args(argv)
    if args.scenes < 1:
        raise SystemExit(f"error: --scenes is {args.scenes}; pass 1 or more.")

    real = read_reference(args.reference)
    ours = built_in_frames(args.scenes, args.seed, args.split)
    stats_real, stats_ours = rooms.rooms_statistics(real), rooms.rooms_statistics(ours)
    print(f"{'statistic':<12} {'real':>7} {'built-in':>9} {'diff':>7}   ({len(real)} real frames, "
          f"{ours.shape[0]} built-in scenes x {ours.shape[1]} views)")
    for name in stats_real:
        print(f"{name:<12} {stats_real[name]:7.3f} {stats_ours[name]:9.3f} "
              f"{stats_ours[name] - stats_real[name]:+7.3f}")

    shown = FIGURE_COLUMNS * FIGURE_ROWS
    # one view from each of the first built-in scenes, as the real strips show different rooms across rows
    ours_shown = ours[:shown, 0] if len(ours) >= shown else ours.reshape(-1, *ours.shape[2:])[:shown]
    stored, exchanged = grid(real[:shown], FIGURE_COLUMNS), grid(real[:shown, ..., ::-1], FIGURE_COLUMNS)
    bottom = grid(ours_shown, FIGURE_COLUMNS)
    spacer = np.full((2 * GAP, stored.shape[1], 3), 255, np.uint8)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    Image.fromarray(np.concatenate([stored, spacer, exchanged, spacer, bottom])).save(args.out)
    print(f"wrote {args.out}: {min(shown, len(real))} real frames as stored (top), "
          f"with red and blue exchanged (middle), {len(ours_shown)} built-in ones (bottom)")


if __name__ == "__main__":
    main()
