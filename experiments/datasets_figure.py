"""The built-in datasets side by side: a row of frames per dataset, beside real DeepMind frames where we have
them, and the look statistics of the free-camera rooms against the real rooms_free_camera frames.

    python experiments/datasets_figure.py [--out assets/datasets.png] [--reference ../shared/reference]

Each row: FRAMES frames of the built-in dataset as the model sees them (decoded JPEG, brought to 64x64 as
the loader does), one view from each of FRAMES scenes of seed 0's test split; then, where --reference holds
real frames of that dataset, REAL of them. The real rooms_ring_camera frames are shown with red and blue
exchanged back (they were saved in BGR order; dataset/rooms.py's docstring). Upscaled x2, nearest. The
real frames are read at run time and not shipped with the project.

It also prints dataset/rooms.py rooms_statistics (band brightness of rows 0-20, 21-42, 43-63, saturated and
black shares) of 200 scenes of each free-camera kind and of the 12 real rooms_free_camera frames.
"""

import argparse
import glob
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dataset import jaco, mazes, rooms, shepard_metzler  # noqa: E402
from dataset.jpeg import decode_jpeg, resize_frames  # noqa: E402

FRAMES, REAL, SCALE, GAP, LABEL = 6, 4, 2, 4, 18

# (row title, frames of scene i: JPEG bytes list, the real frames' folder under --reference, BGR-stored)
ROWS = [
    ("shepard_metzler_5_parts", lambda i: shepard_metzler.render_scenes(0, "test", i, i + 1, parts=5)[0][0],
     None, False),
    ("rooms_ring_camera", lambda i: rooms.render_scenes(0, "test", i, i + 1)[0][0], "rooms_ring_camera",
     True),
    ("rooms_free_camera_no_object_rotations",
     lambda i: rooms.render_scenes(0, "test", i, i + 1, kind="rooms_free_camera_no_object_rotations")[0][0],
     "rooms_free_camera", False),
    ("rooms_free_camera_with_object_rotations (128x128 stored)",
     lambda i: rooms.render_scenes(0, "test", i, i + 1, kind="rooms_free_camera_with_object_rotations")[0][0],
     "rooms_free_camera", False),
    ("mazes (84x84 stored; no real frame to be had)",
     lambda i: mazes.render_scenes(0, "test", i, i + 1, views=8)[0][0], None, False),
    ("jaco (MuJoCo, the Jaco arm of dm-control; no real frame to be had)",
     lambda i: jaco.render_scenes(0, "test", i, i + 1)[0][0], None, False),
]


def as_seen(jpeg):
    """A stored JPEG frame as the model sees it: (64, 64, 3) uint8."""
    return resize_frames(decode_jpeg(jpeg)[None])[0]


def strip(frames):
    """Frames (N, 64, 64, 3) -> one row image, upscaled SCALE x, GAP apart (white)."""
    frames = np.repeat(np.repeat(np.asarray(frames), SCALE, axis=1), SCALE, axis=2)
    n, h, w, _ = frames.shape
    out = np.full((h, n * (w + GAP) - GAP, 3), 255, np.uint8)
    for k, frame in enumerate(frames):
        out[:, k * (w + GAP):k * (w + GAP) + w] = frame
    return out


def figure(reference):
    side = 64 * SCALE
    width = (FRAMES + REAL) * (side + GAP) + 3 * GAP
    canvas = Image.new("RGB", (width, len(ROWS) * (side + LABEL + GAP)), "white")
    draw = ImageDraw.Draw(canvas)
    shown = {}                  # real frames of a folder already shown: a second row shows others
    for r, (title, scene, real_folder, bgr) in enumerate(ROWS):
        top = r * (side + LABEL + GAP)
        built = [as_seen(scene(i)[i % 3]) for i in range(FRAMES)]
        canvas.paste(Image.fromarray(strip(built)), (0, top + LABEL))
        text = f"built-in {title}"
        paths = []
        if real_folder:             # every third frame, from as many of the reference's scenes as it has
            start = shown.get(real_folder, 0)
            paths = sorted(glob.glob(os.path.join(reference, real_folder, "*.png")))[start::3][:REAL]
            shown[real_folder] = start + 1
        if paths:
            real = np.stack([np.asarray(Image.open(p).convert("RGB").resize((64, 64))) for p in paths])
            real = real[..., ::-1] if bgr else real
            canvas.paste(Image.fromarray(strip(real)), (FRAMES * (side + GAP) + 3 * GAP, top + LABEL))
            text += f"  |  real {real_folder} (DeepMind)" + (", red and blue exchanged back" if bgr else "")
        draw.text((2, top + 3), text, fill="black")
    return canvas


def free_camera_statistics(reference, scenes=200):
    paths = sorted(glob.glob(os.path.join(reference, "rooms_free_camera", "*.png")))
    if paths:
        real = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
        print(f"{'real rooms_free_camera':48s}", fmt(rooms.rooms_statistics(real)), f"({len(real)} frames)")
    for kind in ("rooms_free_camera_no_object_rotations", "rooms_free_camera_with_object_rotations"):
        scenes_frames = rooms.render_scenes(0, "train", 0, scenes, kind=kind)
        frames = np.stack([as_seen(f) for s, _ in scenes_frames for f in s])
        print(f"{'built-in ' + kind:48s}", fmt(rooms.rooms_statistics(frames)), f"({len(frames)} frames)")


def fmt(stats):
    return "  ".join(f"{k} {v:.3f}" for k, v in stats.items())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(ROOT, "assets", "datasets.png"))
    p.add_argument("--reference", default=os.path.join(ROOT, "..", "shared", "reference"))
    args = p.parse_args(argv)
    free_camera_statistics(args.reference)
    figure(args.reference).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
