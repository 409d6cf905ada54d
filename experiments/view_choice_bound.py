"""How much of a geometric model's colour error is the choice of which context view to take a colour from.

GeometricFine renders the query view at 64x64: along each pixel's ray its points take an opacity (carving
times a learned factor) and a colour, the context views' colours there weighed by the model's vote (views
near the query camera, and a learned vote on what each view sees), composited front to back. This script
keeps the model's opacities and composites the points' colours chosen other ways:

- the model's own weighing (its rendering, as `GQN.phi.rendering(r)` reads it back);
- the views' mean, and per point their median, and the mean of the two views that agree best there
  (photo-consistency);
- one view per pixel at random, and the view whose composited colour is closest to the truth (an oracle
  that sees the answer: what choosing views could give at most, with these opacities; part of its gain is
  that it picks the best of three guesses, which the random row puts a size on).

Scored as evaluate.py scores a model (3 context views, held-out scenes of the built-in test split); the
last row is the model's own generation from the prior, for comparison.

    python experiments/view_choice_bound.py [--checkpoint assets/gqn-sm5.pt] [--scenes 96]

README ("What makes it learn") quotes its output.
"""

import argparse
import itertools
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import checkpoint  # noqa: E402
import metrics  # noqa: E402
from experiments.carving_bound import row  # noqa: E402
from geometric import GeometricFine  # noqa: E402


def fine_pass_inputs(phi, x, v, v_q):
    """The 64x64 pass's per-point colours in each view (B, M, 3, P) and opacities (B, P), P = 64 * 64 * depths
    in row, column, depth order, as GeometricFine.direct takes them (`pixel_points`)."""
    passed = {}

    def record(ray, learned, x, v, v_q, cos, view_logits=None):
        passed.update(learned=learned)
        return GeometricFine.direct(phi, ray, learned, x, v, v_q, cos, view_logits)

    phi.direct = record                 # this instance only: the call records what the 32x32 pass hands on
    try:
        phi(x, v, v_q)
    finally:
        del phi.direct
    colours, alpha = phi.pixel_points(passed["learned"], x, v, v_q)
    return colours, alpha


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=os.path.join("assets", "gqn-sm5.pt"))
    p.add_argument("--data_dir", default=os.path.join("data", "shepard_metzler_5_parts", "test"))
    p.add_argument("--scenes", type=int, default=96)
    args = p.parse_args(argv)
    model = checkpoint.rebuild_model(checkpoint.load(args.checkpoint)).eval()
    if not isinstance(model.phi, GeometricFine):
        sys.exit(f"{args.checkpoint} holds a {model.config['representation']} model; this script reads "
                 f"geometric_fine's 64x64 rendering: give a checkpoint of one")
    views, cameras, _ = metrics.fixed_batch(args.data_dir, args.scenes, 3, 0)
    views = views.float() / 255
    x, v, truth, v_q = views[:, :3], cameras[:, :3], views[:, 3], cameras[:, 3]
    B, M, D = x.shape[0], x.shape[1], model.phi.depths
    mean_context_mse = metrics.per_image_mse(x.mean(1), truth).mean()
    with torch.no_grad():
        colours, alpha = fine_pass_inputs(model.phi, x, v, v_q)

        def composite(colour):          # (B, 3, P) -> (B, 3, 64, 64) with the model's opacities
            return GeometricFine._composite(alpha.view(B, -1, D),
                                            colour.reshape(B, 3, -1, D)).view(B, 3, 64, 64)

        def pick(images, which):        # images (B, M, 3, 64, 64), which (B, 64, 64) -> (B, 3, 64, 64)
            return images.gather(1, which[:, None, None].expand(-1, 1, 3, -1, -1))[:, 0]

        per_view = torch.stack([composite(colours[:, k]) for k in range(M)], 1)
        pairs = list(itertools.combinations(range(M), 2))
        # (B, pairs, P)
        differ = torch.stack([(colours[:, i] - colours[:, j]).abs().mean(1) for i, j in pairs], 1)
        # (B, pairs, 3, P)
        pair_mean = torch.stack([(colours[:, i] + colours[:, j]) / 2 for i, j in pairs], 1)
        agreeing = pair_mean.gather(1, differ.argmin(1)[:, None, None].expand(-1, 1, 3, -1))[:, 0]
        best = (per_view - truth[:, None]).abs().mean(2).argmin(1)
        chance = torch.randint(0, M, best.shape, generator=torch.Generator().manual_seed(0))
        rows = [("the model's own weighing (its rendering)", model.phi.rendering(model.encode(x, v, v_q))),
                ("the views' mean", composite(colours.mean(1))),
                ("the views' median, per point", composite(colours.median(1).values)),
                ("the two views that agree best, per point", composite(agreeing)),
                ("one view per pixel at random", pick(per_view, chance)),
                ("the view closest to the truth, per pixel (oracle)", pick(per_view, best))]
        torch.manual_seed(0)
        rows.append(("the model's generation from the prior", model.generate(x, v, v_q)))
    print("| colours from | MSE (x mean context) | IoU | colour error | missed object pixels "
          "| colour error where drawn |")
    print("|---|---|---|---|---|---|")
    for name, image in rows:
        print(row(name, image, truth, mean_context_mse))


if __name__ == "__main__":
    main()
