"""The same held-out rooms rendered by two or more trained models, side by side: for each scene its 3 context
views, the truth, then each checkpoint's generation (z from the prior, temperature 1).

    python experiments/rooms_models_figure.py --checkpoints assets/gqn-rooms.pt assets/gqn-rooms-geometric.pt
        [--scenes 6] [--data_dir data/rooms_ring_camera/test] [--out assets/rooms-tower-vs-geometric.png]

The scenes and views are the first --scenes of evaluate.py's (seed 0), so the figure shows scenes that its
table scores; each model's noise is seeded alike. README ("The geometric representation on rooms") shows it.
"""

import argparse
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import checkpoint  # noqa: E402
import gqn_dataset  # noqa: E402
import metrics  # noqa: E402
from held_out import open_with_test_data  # noqa: E402
from images import comparison_grid, save_png  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoints", nargs="+", required=True)
    p.add_argument("--data_dir", default=os.path.join("data", "rooms_ring_camera", "test"))
    p.add_argument("--scenes", type=int, default=6)
    p.add_argument("--out", default=os.path.join("assets", "rooms-tower-vs-geometric.png"))
    args = p.parse_args(argv)
    try:
        draw(args)
    except (checkpoint.CheckpointError, gqn_dataset.DatasetError) as e:
        sys.exit(f"error: {e}")


def draw(args):
    frames, viewpoints, _ = metrics.fixed_batch(args.data_dir, args.scenes, 3, 0)
    views = frames.float() / 255
    x, v, x_q, v_q = views[:, :3], viewpoints[:, :3], views[:, 3], viewpoints[:, 3]
    columns = [x[:, k] for k in range(3)] + [x_q]
    for path in args.checkpoints:
        model = open_with_test_data(path, args.data_dir).model
        torch.manual_seed(0)
        with torch.no_grad():
            columns.append(model.generate(x, v, v_q).clamp(0, 1))
    save_png(comparison_grid(columns), args.out)
    print(f"wrote {args.out}: context x3 | truth | " + " | ".join(args.checkpoints))


if __name__ == "__main__":
    main()
