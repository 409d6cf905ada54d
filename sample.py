r"""Show what a trained GQN renders: a PNG grid of its views of held-out scenes, and an orbit or walk GIF.

    python sample.py --checkpoint runs/GQN/checkpoints/ckpt-00000750.pt  # scenes 0-3, built-in test split
    python sample.py --checkpoint CKPT --scenes 0 5 7 --context 5 --samples 6
    python sample.py --checkpoint CKPT --data_dir /path/to/dataset/test --random 8 --seed 1 --frames 72 \
        --elevation 40

The grid (<checkpoint>-seed<seed>-grid.png) has one row per scene:
    context views (--context of them) | ground truth | reconstruction | samples from the prior (--samples)
The ground truth is the query view, never one of the context views; the reconstruction renders it with
z from the posterior (the model has seen the answer), the samples with z from the prior (it has not).
The context and query views of scene i are drawn from (--seed, i) exactly as evaluate.py draws them,
so the grid shows the scenes that evaluate.py scores with the same seed and --context.

The orbit (<checkpoint>-seed<seed>-orbit.gif, --frames frames) moves the query camera once around each
scene: yaw from 0 to 2 pi (the last frame stops one step short, so the loop is seamless), every camera
looking at the point the scene's own cameras look at (dataset/viewpoints.py look_target: the origin for
Shepard-Metzler, the room's centre at eye height for rooms), at a fixed distance from it (--distance,
default the mean of the scene's cameras) and a fixed elevation. The elevation: --elevation (degrees
above the target) or --pitch; by default the pitch that all of the scene's cameras share where they
do (a ring of cameras, as in rooms_ring_camera: the orbit walks that ring), else 25 degrees above.
In the dataset's convention (raw cameras (x, y, z, yaw, pitch)) a camera looking down has a negative
pitch: --elevation 25 is --pitch -25.

Where a scene's cameras look anywhere rather than at one point (rooms_free_camera, mazes; told from the
cameras alone by dataset/viewpoints.py looks_at_one_point, so converted DeepMind data too), there is no
centre to circle: the GIF (<checkpoint>-seed<seed>-walk.gif) walks through the scene instead, a loop from
the query view's camera through WALK_STOPS of the scene's own cameras, each the nearest one not yet
visited a step away, and back (dataset/viewpoints.py walk_path). --path orbit or walk chooses for every
scene. These are views that no frame of the dataset has, rendered by
model.generate from the same context views as the grid. Each frame of the GIF holds one row per scene:
its context views, then the orbit view.

Noise: z is sampled, so each rendering needs noise. The global torch generator is seeded before each
rendering (runtime.noise_seed): with noise_seed(seed, 0) for the reconstruction, noise_seed(seed, k)
for sample column k (1-based), and, before EVERY orbit frame, noise_seed(seed, 1) again. All frames of
the orbit therefore use the same z noise (the noise of the first sample column), so the orbit shows one
hypothesis of the scene turning, rather than a new guess in each frame. Same checkpoint, data, flags and
seed: the same bytes, on the same machine and torch build.

Pillow only (images.py: grids, PNG, and GIFs whose frames share one palette); no torchvision.
"""

import argparse
import math
import os
import sys

import numpy as np
import torch

import checkpoint
import gqn_dataset
import held_out
from dataset.viewpoints import (look_target, looks_at_one_point, raw_to_viewpoint, viewpoint_around,
                                viewpoint_to_raw, walk_path)
from images import comparison_grid, save_gif, save_png
from options import (add_checkpoint_arguments, nonnegative_float, nonnegative_int, positive_float,
                     positive_int)
from runtime import SCENE_STREAM, UsageError, generator, noise_seed, pick_device

DEFAULT_SCENES = 4              # scenes 0..3 when neither --scenes nor --random is given
DEFAULT_ELEVATION = 25.0        # degrees above the target where the scene's cameras do not share one pitch
RING_PITCH_TOLERANCE = 1e-3     # radians: cameras whose pitches differ by less share one (a ring)
WALK_STOPS = 8                  # the scene's cameras a walk passes through


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Render a GQN checkpoint's views of held-out scenes: a PNG grid "
                                            "(context | truth | reconstruction | samples) and an orbit GIF.")
    add_checkpoint_arguments(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--scenes", type=int, nargs="+", default=None, metavar="I",
                       help=f"scene indices of the split (default: 0 to {DEFAULT_SCENES - 1})")
    which.add_argument("--random", type=positive_int, default=None, metavar="N",
                       help="N distinct scenes drawn from --seed")
    p.add_argument("--samples", type=nonnegative_int, default=4,
                   help="samples from the prior per scene (default 4)")
    p.add_argument("--frames", type=positive_int, default=36, help="frames of the GIF (default 36)")
    p.add_argument("--path", choices=["auto", "orbit", "walk"], default="auto",
                   help="the GIF's camera path: circle the point the cameras look at, or walk through the "
                        "scene's cameras (default auto: walk where the cameras do not look at one point)")
    angle = p.add_mutually_exclusive_group()
    angle.add_argument("--elevation", type=float, default=None,
                       help="orbit camera's angle above the target in degrees (default: the pitch the "
                            f"scene's cameras share, a ring; else {DEFAULT_ELEVATION:g})")
    angle.add_argument("--pitch", type=float, default=None,
                       help="the same angle as the dataset's raw cameras' pitch, in degrees: negative looks "
                            "down from above (default: as --elevation)")
    p.add_argument("--distance", type=positive_float, default=None,
                   help="orbit camera's distance from the target (default: the mean of the scene's cameras)")
    p.add_argument("--temperature", type=nonnegative_float, default=1.0,
                   help="scale of the prior's standard deviation (default 1: the model's samples; 0: z at "
                        "the prior's mean, every sample alike; below 1 departs from the paper)")
    p.add_argument("--out", default=None, help="output folder (default: the checkpoint's folder)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace earlier files of the same name (default: keep them and write NAME-2, "
                        "NAME-3, ...)")
    args = p.parse_args(argv)
    pitch = None if args.elevation is None and args.pitch is None else \
        (args.pitch if args.pitch is not None else -args.elevation)
    if pitch is not None and not -90 < pitch < 90:
        p.exit(2, f"error: the orbit's pitch {pitch:g} degrees must lie strictly between -90 and 90 "
                  f"(at the poles the camera's yaw is undefined)\n")
    args.pitch_deg = pitch
    return args


def free_paths(stem, overwrite=False, movie="orbit"):
    """The grid's and the GIF's paths, STEM-grid.png and STEM-<movie>.gif; where either exists already (an
    earlier run, perhaps with other scenes or settings, or the README's images in assets/), unless
    overwrite: STEM-2-..., STEM-3-..., the first pair that is free."""
    n, suffix = 1, ""
    while not overwrite and any(os.path.exists(f"{stem}{suffix}-{kind}")
                                for kind in ("grid.png", f"{movie}.gif")):
        n += 1
        suffix = f"-{n}"
    return f"{stem}{suffix}-grid.png", f"{stem}{suffix}-{movie}.gif"


def choose_scenes(args, num_scenes, data_dir):
    """--scenes (checked), --random N (distinct, from --seed) or the first DEFAULT_SCENES scenes."""
    if args.random is not None:
        if args.random > num_scenes:
            raise UsageError(f"--random {args.random} asks for more scenes than the {num_scenes} of "
                                      f"{data_dir}; pass at most {num_scenes}")
        return [int(i) for i in generator(args.seed, SCENE_STREAM).choice(num_scenes, size=args.random,
                                                                          replace=False)]
    if args.scenes is None:
        return list(range(min(DEFAULT_SCENES, num_scenes)))
    for i in args.scenes:
        if not 0 <= i < num_scenes:
            raise UsageError(f"scene {i} does not exist: {data_dir} holds {num_scenes} scenes, "
                                      f"so pass --scenes between 0 and {num_scenes - 1}")
    return list(args.scenes)


def load_scenes(dataset, scenes, context, seed):
    """Context, query and cameras of each scene, with the views evaluate.py would use:
    x (B, M, 3, 64, 64) and x_q (B, 3, 64, 64) floats in [0, 1], v (B, M, 7), v_q (B, 7), the raw
    cameras of all of each scene's views, a list of B arrays (S, 5), and each scene's query view (B ints)."""
    views = gqn_dataset.FixedContextSampler(len(dataset), dataset.num_views, 1, context, seed)
    x, v, x_q, v_q, cameras, queries = [], [], [], [], [], []
    for i in scenes:
        # all S views: (S, 3, 64, 64), (S, 7)
        frames, viewpoints = dataset[(i, tuple(range(dataset.num_views)))]
        chosen = torch.from_numpy(views.views(i))                            # M context views, then the query
        images = frames[chosen].float() / 255
        x.append(images[:-1]), x_q.append(images[-1])
        v.append(viewpoints[chosen[:-1]]), v_q.append(viewpoints[chosen[-1]])
        cameras.append(viewpoint_to_raw(viewpoints))
        queries.append(int(chosen[-1]))
    return torch.stack(x), torch.stack(v), torch.stack(x_q), torch.stack(v_q), cameras, queries


def orbit_viewpoints(frames, pitch, distance, target=(0.0, 0.0, 0.0)):
    """Cameras circling `target`, looking at it: yaw 2 pi t / frames for t < frames, fixed pitch (radians,
    the dataset's convention) and distance -> viewpoints (frames, 7) in the project's order."""
    yaw = 2 * np.pi * np.arange(frames) / frames                            # (T,)
    return viewpoint_around(target, yaw, np.full(frames, pitch), np.full(frames, distance))   # (T, 7)


def scene_orbit(cameras, pitch_deg=None, distance=None):
    """A scene's orbit, from its raw cameras (S, 5): (target (3,), pitch in radians, distance). The pitch is
    pitch_deg where given, else the one the cameras share (a ring), else DEFAULT_ELEVATION above the target;
    the distance is `distance` where given, else the cameras' mean distance from the target."""
    target = look_target(cameras)
    if pitch_deg is not None:
        pitch = math.radians(pitch_deg)
    elif np.ptp(cameras[:, 4]) < RING_PITCH_TOLERANCE:
        pitch = float(cameras[:, 4].mean())
    else:
        pitch = -math.radians(DEFAULT_ELEVATION)
    if distance is None:
        distance = float(np.linalg.norm(cameras[:, :3] - target, axis=1).mean())
    return target, pitch, distance


def scene_path(cameras, query, frames, path="auto", pitch_deg=None, distance=None):
    """A scene's GIF cameras from its raw cameras (S, 5): (viewpoints (frames, 7), "orbit" or "walk", a
    description). path "auto" walks where the cameras do not look at one point; a walk starts at the query
    view's camera; an orbit is scene_orbit's."""
    if path == "walk" or (path == "auto" and not looks_at_one_point(cameras)):
        raw = walk_path(cameras, frames, stops=WALK_STOPS, start=query)
        return (torch.from_numpy(raw_to_viewpoint(raw).astype(np.float32)), "walk",
                f"a walk through {min(WALK_STOPS, len(cameras))} of the scene's cameras")
    target, pitch, d = scene_orbit(cameras, pitch_deg, distance)
    return (orbit_viewpoints(frames, pitch, d, target), "orbit",
            f"pitch {math.degrees(pitch):.3g} deg, distance {d:.3g} from "
            f"({', '.join(f'{c:.3g}' for c in target + 0.0)})")


@torch.no_grad()
def render_grid_columns(model, x, v, x_q, v_q, samples, seed, temperature=1.0):
    """reconstruction (B, 3, 64, 64) and a list of `samples` prior samples, each (B, 3, 64, 64)."""
    torch.manual_seed(noise_seed(seed, 0))
    reconstruction = model.reconstruct(x, v, v_q, x_q)
    generated = []
    for k in range(1, samples + 1):
        torch.manual_seed(noise_seed(seed, k))
        generated.append(model.generate(x, v, v_q, temperature))
    return reconstruction, generated


@torch.no_grad()
def render_orbit(model, x, v, orbit, seed, temperature=1.0):
    """orbit (B, T, 7) query cameras (an orbit or a walk) -> frames (T, B, 3, 64, 64), every frame with the
    same noise."""
    frames = []
    for t in range(orbit.shape[1]):
        torch.manual_seed(noise_seed(seed, 1))                # the first sample column's noise, each frame
        frames.append(model.generate(x, v, orbit[:, t], temperature))
    return torch.stack(frames)


def grid_image(x, x_q, reconstruction, generated):
    """Rows of: context views | ground truth | reconstruction | samples -> (3, H', W')."""
    return comparison_grid([x[:, k] for k in range(x.shape[1])] + [x_q, reconstruction] + list(generated))


def orbit_images(x, frames):
    """Each GIF frame: rows of the scene's context views, then its orbit view -> list of (3, H', W')."""
    return [comparison_grid([x[:, k] for k in range(x.shape[1])] + [frame]) for frame in frames]


def sample(args):
    """Write the grid PNG and the orbit GIF; returns their paths."""
    device = pick_device(args.device)
    opened = held_out.open_with_test_data(args.checkpoint, args.data_dir, args.context, device)
    model, data_dir, dataset = opened.model, opened.data_dir, opened.dataset
    scenes = choose_scenes(args, len(dataset), data_dir)
    out = args.out or os.path.dirname(os.path.abspath(args.checkpoint))
    checkpoint.ensure_writable(out)

    x, v, x_q, v_q, cameras, queries = load_scenes(dataset, scenes, args.context, args.seed)
    x, v, x_q, v_q = x.to(device), v.to(device), x_q.to(device), v_q.to(device)
    reconstruction, generated = render_grid_columns(model, x, v, x_q, v_q, args.samples, args.seed,
                                                    args.temperature)

    paths = [scene_path(c, q, args.frames, args.path, args.pitch_deg, args.distance)
             for c, q in zip(cameras, queries)]                                     # (cameras, kind, words)
    orbit = torch.stack([p[0] for p in paths]).to(device)
    frames = render_orbit(model, x, v, orbit, args.seed, args.temperature)               # (T, B, 3, 64, 64)
    movie = "walk" if any(p[1] == "walk" for p in paths) else "orbit"

    stem = os.path.join(out, f"{os.path.splitext(os.path.basename(args.checkpoint))[0]}-seed{args.seed}"
                             + (f"-t{args.temperature:g}" if args.temperature != 1 else ""))
    grid_path, orbit_path = free_paths(stem, args.overwrite, movie)
    save_png(grid_image(x, x_q, reconstruction, generated), grid_path)
    save_gif(orbit_images(x, frames), orbit_path)
    m, k = args.context, args.samples
    print(f"scenes {' '.join(map(str, scenes))} of {data_dir}, {m} context views, seed {args.seed}"
          + (f", prior temperature {args.temperature:g}" if args.temperature != 1 else ""))
    print(f"wrote {grid_path}: one row per scene: {m} context | truth | reconstruction | {k} samples")
    described = sorted({p[2] for p in paths})
    print(f"wrote {orbit_path}: {args.frames} frames, {'; '.join(described[:4])}"
          f"{'; ...' if len(described) > 4 else ''}; one row per scene: {m} context | {movie} view")
    return grid_path, orbit_path


def main(argv=None):
    args = parse_args(argv)
    try:
        return sample(args)
    except (checkpoint.CheckpointError, gqn_dataset.DatasetError, UsageError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
