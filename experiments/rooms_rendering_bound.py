"""What geometric_rooms's rendering scores before any training: the held-out rooms' query views rendered from
their 3 context views by geometric.GeometricRooms at its initial values (foreground where a pixel's colour
lies 0.16 from its surface's median, photo-consistency within 0.1), against the two 3D-blind baselines, with
the region metrics of evaluate.py. `--representation geometric_jaco` does the same for jaco's scenes.

    python experiments/rooms_rendering_bound.py [--scenes 200] [--data_dir data/rooms_ring_camera/test]
    python experiments/rooms_rendering_bound.py --representation geometric_jaco --data_dir data/jaco/test
"""

import argparse
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import metrics  # noqa: E402
from geometric import REPRESENTATIONS  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_dir", default=os.path.join("data", "rooms_ring_camera", "test"))
    p.add_argument("--scenes", type=int, default=200)
    p.add_argument("--representation", choices=("geometric_rooms", "geometric_jaco"),
                   default="geometric_rooms")
    args = p.parse_args(argv)
    network = REPRESENTATIONS[args.representation]
    frames, viewpoints, labels = metrics.fixed_batch(args.data_dir, args.scenes, 3, 0)
    views = frames.float() / 255
    x, v, truth, v_q = views[:, :3], viewpoints[:, :3], views[:, 3], viewpoints[:, 3]
    torch.manual_seed(0)
    with torch.no_grad():
        rendering = network.rendering(network(r_dim=96)(x, v, v_q))
    images = dict(rendering=rendering, **metrics.baselines(x, v, v_q))
    best = min(metrics.per_image_mse(images[k], truth).mean() for k in ("mean_context", "nearest_context"))
    for name, image in images.items():
        regions = metrics.region_metrics(image, truth, labels.values, labels.scheme)
        mse = metrics.per_image_mse(image, truth).mean()
        print(f"{name}: MSE {mse:.5f} ({mse / best:.2f}x the better baseline) "
              + " ".join(f"{k} {torch.nanmean(value):.3f}" for k, value in regions.items()))


if __name__ == "__main__":
    main()
