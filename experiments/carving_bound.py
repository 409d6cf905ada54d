"""How far the context views' colours alone go: render held-out query views with no learning at all.

Every point along each query pixel's ray (64x64 rays, --depths points across the scene's sphere) is
projected into the 3 context views, as representation.GeometricFine does. A point is solid where space
carving keeps it (every view sees the object there: largest channel > 0.1) and, with --tau, where it
is also photo-consistent: the two views that agree best there differ by less than tau (mean absolute
difference per channel). The ray's colour is that of its first solid point: the views' mean, or the
agreeing pair's. The table gives the metrics of evaluate.py against the truth, and splits the object's
colour error into missed pixels and wrong colours where the object is drawn.

    python experiments/carving_bound.py [--scenes 64] [--data_dir data/shepard_metzler_5_parts/test]

README ("What makes it learn") quotes its output for 64 scenes.
"""

import argparse
import itertools
import os
import sys

import torch
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import metrics  # noqa: E402
from geometric import Geometric  # noqa: E402


def first_solid(solid, colour):
    """solid (B, P) bool and colour (B, P, 3) at P = 64 * 64 * D points -> the first solid point's colour
    along each ray, black where none is: (B, 3, 64, 64)."""
    B, D = solid.shape[0], solid.shape[1] // (64 * 64)
    image = Geometric._composite(solid.float().view(B, 64 * 64, D),
                                 colour.transpose(1, 2).reshape(B, 3, 64 * 64, D))
    return image.view(B, 3, 64, 64)


def render(x, v, v_q, depths, tau=None):
    """x (B, M, 3, 64, 64), v (B, M, 7), v_q (B, 7) -> the carved (and, with tau, photo-consistent) view."""
    B, M = x.shape[:2]
    rays = Geometric(r_dim=72, depths=depths)
    grid = Geometric._grid(rays.query_rays(v_q, 64), v.flatten(0, 1), M)
    seen = F.grid_sample(x.flatten(0, 1), grid, align_corners=False).view(B, M, 3, -1).transpose(2, 3)
    solid = seen.amax(dim=-1).amin(dim=1) > metrics.OBJECT_THRESHOLD
    if tau is None:
        return first_solid(solid, seen.mean(dim=1))
    pairs = list(itertools.combinations(range(M), 2))
    differ = torch.stack([(seen[:, i] - seen[:, j]).abs().mean(-1) for i, j in pairs], 1)   # (B, pairs, P)
    best, which = differ.min(dim=1)
    pair_colour = torch.stack([(seen[:, i] + seen[:, j]) / 2 for i, j in pairs], 1)         # (B, pairs, P, 3)
    colour = pair_colour.gather(1, which[:, None, :, None].expand(-1, 1, -1, 3))[:, 0]
    return first_solid(solid & (best < tau), colour)


def row(name, image, truth, mean_context_mse):
    drawn, true = metrics.object_masks(image), metrics.object_masks(truth)
    wrong = ((image - truth).abs().mean(1) * (drawn & true)).sum() / (drawn & true).sum().clamp_min(1)
    missed = (true & ~drawn).sum() / true.sum()
    mse = metrics.per_image_mse(image, truth).mean()
    return (f"| {name} | {mse:.5f} ({mse / mean_context_mse:.2f}x) "
            f"| {metrics.object_iou(image, truth).mean():.3f} "
            f"| {metrics.object_colour_error(image, truth).mean():.3f} | {missed:.3f} | {wrong:.3f} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_dir", default=os.path.join("data", "shepard_metzler_5_parts", "test"))
    p.add_argument("--scenes", type=int, default=64)
    args = p.parse_args(argv)
    views, cameras, _ = metrics.fixed_batch(args.data_dir, args.scenes, 3, 0)
    views = views.float() / 255
    x, v, truth, v_q = views[:, :3], cameras[:, :3], views[:, 3], cameras[:, 3]
    mean_context_mse = metrics.per_image_mse(x.mean(1), truth).mean()
    print("| rendering | MSE (x mean context) | IoU | colour error | missed object pixels "
          "| colour error where drawn |")
    print("|---|---|---|---|---|---|")
    with torch.no_grad():
        for depths in (16, 64):
            print(row(f"carving, {depths} depths, views' mean colour", render(x, v, v_q, depths), truth,
                      mean_context_mse), flush=True)
            for tau in (0.06, 0.1, 0.2):
                print(row(f"carving + photo-consistency tau {tau}, {depths} depths",
                          render(x, v, v_q, depths, tau), truth, mean_context_mse), flush=True)


if __name__ == "__main__":
    main()
