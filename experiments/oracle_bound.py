"""The best any model can do from 3 context views of the built-in scenes: an oracle that knows the geometry.

The oracle is given the object's true cubes and the cameras, so it draws every query pixel on the
right cube and face with the right shading; what it cannot know is the colour of a cube that no
context view shows (each cube's hue is drawn at random, independently of the others). It colours the
cubes that some context view shows exactly (as the renderer does, before JPEG) and the unseen ones
with the per-channel median colour over all hues (the guess with the least absolute error), shaded.
Scored as evaluate.py scores a model against the stored JPEG frame, this gives what a model that renders
the scene exactly, but not the JPEG encoding's artefacts, would score on the task the issue sets (3
context views, one query). The JPEG frames are not the clean rendering: their 4:2:0 chroma subsampling
(PIL's default, and what the dataset stores) bleeds each cube's colour over about a pixel around its
edges, and its ringing lifts black pixels next to the object above the object threshold; the last
row shows the share of that which is chroma subsampling.

    python experiments/oracle_bound.py [--scenes 200] [--draws 5] [--context 3]

Scenes are the built-in test split's (seed 0, 5 cubes), re-rendered here with the same code and bytes
as dataset/shepard_metzler.py; each scene gets --draws random choices of context views and query.
README ("What makes it learn") quotes its output.
"""

import argparse
import io
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import metrics  # noqa: E402
from dataset import shepard_metzler as sm  # noqa: E402
from dataset.jpeg import decode_jpeg  # noqa: E402


def cube_ids(centres, positions):
    """Which cube each pixel shows, -1 for background: (V, 64, 64) ints, and each pixel's shading (V, 64, 64)
    in [0, 1]. The cubes are rendered in colours (1, k / n, 0): shading scales all channels alike, so red is
    the shading and green over red gives k back."""
    n = len(centres)
    codes = np.stack([np.ones(n), np.arange(n) / n, np.zeros(n)], axis=1).astype(np.float32)
    image = sm.render_views(centres, codes, positions).astype(np.float32)
    ids = np.rint(image[..., 1] / np.maximum(image[..., 0], 1) * n).astype(np.int64)
    return np.where(image[..., 0] > 0, ids, -1), image[..., 0] / 255


def jpeg_round_trip(image, **options):
    """uint8 (64, 64, 3) -> the decoded JPEG in [0, 1]: the dataset's encoding (sm.encode_jpeg: quality 90,
    4:2:0 chroma subsampling), or PIL's with `options`."""
    if options:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=sm.JPEG_QUALITY, **options)
        data = buf.getvalue()
    else:
        data = sm.encode_jpeg(image)
    return decode_jpeg(data).astype(np.float32) / 255


def median_colour(samples=100_000):
    """The per-channel median of a cube's colour over random hues: the L1-best guess for an unseen cube."""
    hues = np.random.default_rng(0).random(samples)
    return np.median(sm.hsv_to_rgb(hues, sm.SATURATION, sm.VALUE), axis=0)


def scores(pred, truth):
    """metrics.object_iou and metrics.object_colour_error of one (64, 64, 3) image against the truth."""
    pred, truth = (torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)[None]
                   for a in (pred, truth))
    return float(metrics.object_iou(pred, truth)), float(metrics.object_colour_error(pred, truth))


EXACT = "the exact rendering (every cube's colour known), before JPEG"
ORACLE = "the exact geometry, cubes no context view shows in the median colour"
FULL_CHROMA = ("the exact rendering against the frame stored without chroma subsampling "
               "(4:4:4; not the dataset's)")


def measure(scenes=200, draws=5, context=3, parts=5):
    """Mean (IoU, colour error) of each rendering (EXACT, ORACLE, FULL_CHROMA) over scenes x draws
    queries, and the share of the queries' object pixels on cubes that no context view shows."""
    guess = median_colour()
    rows = {EXACT: [], ORACLE: [], FULL_CHROMA: []}
    unseen_share = []
    for i in range(scenes):
        centres, colours, positions = sm.random_scene(0, "test", i, parts)
        ids, shade = cube_ids(centres, positions)                        # (15, 64, 64) each
        frames = sm.render_views(centres, colours, positions)             # uint8, before JPEG
        clean = frames.astype(np.float32) / 255
        rng = np.random.default_rng([1, i])
        for _ in range(draws):
            views = rng.permutation(len(positions))[:context + 1]
            query = views[-1]
            truth = jpeg_round_trip(frames[query])
            seen = np.isin(np.arange(len(centres)), ids[views[:-1]])
            q = ids[query]
            unseen = (q >= 0) & ~seen[np.maximum(q, 0)]
            guessed = np.where(unseen[..., None], guess * shade[query][..., None], clean[query])
            rows[EXACT].append(scores(clean[query], truth))
            rows[ORACLE].append(scores(guessed, truth))
            rows[FULL_CHROMA].append(scores(clean[query], jpeg_round_trip(frames[query], subsampling=0)))
            unseen_share.append(unseen.sum() / max((q >= 0).sum(), 1))
    return ({name: tuple(np.mean(values, axis=0)) for name, values in rows.items()},
            float(np.mean(unseen_share)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenes", type=int, default=200)
    p.add_argument("--draws", type=int, default=5, help="choices of context views and query per scene")
    p.add_argument("--context", type=int, default=3)
    p.add_argument("--parts", type=int, default=5)
    args = p.parse_args(argv)
    rows, unseen = measure(args.scenes, args.draws, args.context, args.parts)
    print(f"{args.scenes * args.draws} queries ({args.scenes} test scenes x {args.draws}), "
          f"{args.context} context views; "
          f"share of the object's pixels on cubes no context view shows: {unseen:.3f}")
    print("| rendering | IoU | colour error |")
    print("|---|---|---|")
    for name, (iou, colour) in rows.items():
        print(f"| {name} | {iou:.3f} | {colour:.3f} |")


if __name__ == "__main__":
    main()
