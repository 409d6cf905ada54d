"""Evaluate a GQN on held-out scenes: -ELBO, KL, NLL, bits per dim, and the MSE / PSNR, object IoU, object
colour error and NLL above its sigma floor of its generations and reconstructions, next to three
baselines that know nothing of 3D.

    python evaluate.py --checkpoint runs/demo/checkpoints/ckpt-00002500.pt            # built-in test scenes
    python evaluate.py --checkpoint CKPT --data_dir /path/to/dataset/test --scenes 1000 --context 3

The baselines answer "does the model render the scene, or something cheaper?":
- black: an all-black image (what a GQN stuck at the background renders);
- mean context: the pixel-wise mean of the context views;
- nearest context: the context view whose camera position is nearest the query's.
The context and query views of each scene come from (--seed, scene) alone (gqn_dataset.FixedContextSampler,
the views sample.py shows too), and the model's noise of batch i from (--seed, i): the same checkpoint,
seed and batch size give the same numbers. -ELBO, KL and NLL are nats per scene (NLL under the pixel
sigma the checkpoint's run had reached, unless --sigma), bits per dim is -ELBO per colour value in bits,
and MSE / PSNR are per query image, averaged over the scenes. Prints a table (and a progress bar) and
writes JSON (default: <checkpoint>-eval.json next to the checkpoint).
"""

import argparse
import json
import math
import os
import sys

import torch

import gqn_dataset
from dataset.shepard_metzler import builtin_root
from images import comparison_grid
from model import bits_per_dim
from runtime import UsageError, autocast, noise_seed, pick_device, split_batch

METRICS = ("neg_elbo", "kl", "nll", "bits_per_dim")
IMAGE_METHODS = ("generation", "reconstruction", "black", "mean_context", "nearest_context")
# per image method: what a person sees (is the object there, in its shape, in its colours?)
IMAGE_METRICS = ("mse", "psnr", "iou", "colour_error", "nll_above_floor")
OBJECT_THRESHOLD = 0.1  # a pixel is the object's when its largest channel exceeds this (the background is black)


def baselines(x, v, v_q):
    """Images a 3D-blind guesser would render for the query: black, mean context, nearest context."""
    B = x.shape[0]
    distance = (v[:, :, :3] - v_q[:, None, :3]).norm(dim=-1)          # (B, M) camera position distance
    nearest = x[torch.arange(B, device=x.device), distance.argmin(dim=1)]
    return dict(black=torch.zeros_like(x[:, 0]), mean_context=x.mean(dim=1), nearest_context=nearest)


def per_image_mse(a, b):
    return ((a - b) ** 2).flatten(1).mean(dim=1)                       # (B,)


def psnr(mse):
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


def object_masks(image, threshold=OBJECT_THRESHOLD):
    """(B, 3, H, W) -> (B, H, W) bool: the pixels whose largest channel exceeds the threshold."""
    return image.amax(dim=1) > threshold


def object_iou(image, truth):
    """Per image (B,): intersection over union of the object's pixels in `image` and in `truth`
    (1 where neither has any). A grey blob in the right place scores about 0.6; the built-in scenes' exact
    rendering 0.915 against their JPEG frames (experiments/oracle_bound.py)."""
    a, b = object_masks(image), object_masks(truth)
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def object_colour_error(image, truth):
    """Per image (B,): mean |image - truth| over the true object's pixels and the 3 channels (0 where the
    truth shows no object). A grey blob gives about 0.2; the built-in scenes' exact rendering 0.057 against
    their JPEG frames, whose 4:2:0 chroma subsampling blurs the colours at the cubes' edges."""
    mask = object_masks(truth).float()
    error = (image - truth).abs().mean(dim=1)                          # (B, H, W)
    return (error * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)


def nll_floor(sigma, image_shape):
    """The least negative log-likelihood (nats) any image can have under pixel sigma: every pixel exact.
    At sigma 0.7 and 64x64x3 it is 6,909 nats, so a loss near 6.9e3 is a plateau, not a good model."""
    return math.prod(image_shape) * (math.log(sigma) + 0.5 * math.log(2 * math.pi))


def nll_above_floor(image, truth, sigma):
    """Per image (B,): the Gaussian NLL of `truth` around `image`, less its floor: sum (x - mu)^2 / (2 sigma^2)."""
    return ((image - truth) ** 2).flatten(1).sum(1) / (2 * sigma ** 2)


@torch.no_grad()
def evaluate_batch(model, x, v, x_q, v_q, sigma, dtype="float32", temperature=1.0):
    """Per-scene metrics of one batch, each (B,), plus the images: one ELBO pass and one generation."""
    with autocast(x.device, dtype):
        t = model.elbo_terms(x, v, v_q, x_q, sigma)
        generation = model.generate(x, v, v_q, temperature).float()
    images = dict(generation=generation, reconstruction=t["x_mu"].float().clamp(0, 1), **baselines(x, v, v_q))
    out = dict(neg_elbo=-t["elbo"].float(), kl=t["kl"].float(), nll=t["nll"].float())
    out["bits_per_dim"] = bits_per_dim(out["neg_elbo"], x_q.shape[1:])
    for name, image in images.items():
        mse = per_image_mse(image, x_q)
        out[f"mse_{name}"], out[f"psnr_{name}"] = mse, psnr(mse)
        out[f"iou_{name}"] = object_iou(image, x_q)
        out[f"colour_error_{name}"] = object_colour_error(image, x_q)
        out[f"nll_above_floor_{name}"] = nll_above_floor(image, x_q, sigma)
    # the model's own term: its NLL (of the unclamped posterior mean) above the floor
    out["nll_above_floor_reconstruction"] = out["nll"] - nll_floor(sigma, x_q.shape[1:])
    return out, images


@torch.no_grad()
def evaluate(model, loader, sigma, device, seed=0, dtype="float32", progress=True, temperature=1.0, first=None):
    """Mean of every metric over all the loader's scenes. Deterministic for a given model and seed. A dict
    `first` receives the first batch's x, x_q and images, the ones scored (final_report draws them)."""
    from tqdm import tqdm
    model.eval()
    sums, count = {}, 0
    for i, (frames, viewpoints) in enumerate(tqdm(loader, desc="evaluating", disable=not progress, leave=False)):
        torch.manual_seed(noise_seed(seed, i))                            # the noise of batch i
        x, v, x_q, v_q = split_batch(frames, viewpoints, device)
        out, images = evaluate_batch(model, x, v, x_q, v_q, sigma, dtype, temperature)
        if i == 0 and first is not None:
            first.update(x=x, x_q=x_q, **images)
        for k, value in out.items():
            sums[k] = sums.get(k, 0.0) + value.sum().item()
        count += x.shape[0]
    return {k: s / count for k, s in sums.items()} | dict(scenes=count)


def fixed_batch(test_dir, batch_size, context, seed):
    """One deterministic batch of test scenes (the first `batch_size`), for the training logs."""
    dataset = gqn_dataset.SceneViews(test_dir)
    batch_size = min(batch_size, len(dataset))
    context = min(context, dataset.num_views - 1)
    return next(iter(gqn_dataset.make_eval_loader(test_dir, batch_size, batch_size, context, seed)))


def format_table(metrics):
    """-ELBO and its terms, then one row per image method: MSE, PSNR, object IoU, object colour error,
    NLL above its floor."""
    lines = [f"{'':16s}{'value':>12s}"]
    lines += [f"{k:16s}{metrics[k]:12.4f}" for k in METRICS]
    lines.append(image_table(metrics))
    return "\n".join(lines)


def image_table(metrics, methods=IMAGE_METHODS, indent=""):
    lines = [f"{indent}{'query view':16s}{'MSE':>10s}{'PSNR (dB)':>11s}{'IoU':>8s}{'colour err':>12s}{'NLL-floor':>11s}"]
    lines += [f"{indent}{m:16s}{metrics['mse_' + m]:10.5f}{metrics['psnr_' + m]:11.2f}{metrics['iou_' + m]:8.3f}"
              f"{metrics['colour_error_' + m]:12.4f}{metrics['nll_above_floor_' + m]:11.1f}" for m in methods]
    return "\n".join(lines)


def final_report(model, test_dir, run_dir, scenes, context, seed, device, sigma, log=print, dtype="float32"):
    """The end of a training run: metrics on held-out scenes against the baselines, final.json, final.png."""
    from images import save_png
    dataset = gqn_dataset.SceneViews(test_dir)
    scenes = min(scenes, len(dataset))
    context = min(context, dataset.num_views - 1)
    loader = gqn_dataset.make_eval_loader(test_dir, scenes, 32, context, seed)
    first = {}
    metrics = evaluate(model, loader, sigma, device, seed, dtype, first=first)   # and the first batch's images
    x = first["x"][:8]
    columns = [x[:, k] for k in range(x.shape[1])] + [first[k][:8] for k in ("x_q", "reconstruction", "generation")]
    save_png(comparison_grid(columns), os.path.join(run_dir, "final.png"))
    with open(os.path.join(run_dir, "final.json"), "w") as f:
        json.dump(dict(metrics, context=context, seed=seed, sigma=sigma), f, indent=2)
    log(f"held-out scenes: {scenes}, context views: {context}, sigma {sigma:.3g}; the query view "
        f"(IoU and colour error over the object's pixels, NLL in nats above its floor):")
    log(image_table(metrics, indent="  "))
    log(f"  KL {metrics['kl']:.1f} nats; generation MSE / mean-context MSE = "
        f"{metrics['mse_generation'] / metrics['mse_mean_context']:.2f}")
    beaten = all(metrics["mse_generation"] < metrics[f"mse_{b}"] for b in ("black", "mean_context", "nearest_context"))
    log("generations beat all three baselines" if beaten else "generations do NOT yet beat all three baselines")
    log(f"wrote {os.path.join(run_dir, 'final.png')} (context | truth | reconstruction | generation) and final.json")
    return metrics


def main(argv=None):
    import checkpoint
    p = argparse.ArgumentParser(description="Evaluate a GQN checkpoint on held-out scenes: -ELBO, KL, NLL, "
                                            "bits per dim, MSE and PSNR of generations, reconstructions and baselines.")
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by train.py")
    p.add_argument("--data_dir", default=None, help="test split folder (default: the built-in scenes' test split "
                                                    "the checkpoint's run trained next to, rendered if absent)")
    p.add_argument("--scenes", type=int, default=None, help="number of scenes, the first of the split (default: all)")
    p.add_argument("--context", type=int, default=3, help="context views per scene (default 3)")
    p.add_argument("--batch_size", type=int, default=32, help="scenes per batch (default 32; the noise is drawn per batch)")
    p.add_argument("--seed", type=int, default=0, help="chooses the context and query views and the model's noise (default 0)")
    p.add_argument("--sigma", type=float, default=None, help="pixel sigma of the likelihood (default: the checkpoint's)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="scale of the prior's standard deviation for the generations (default 1: the model's "
                        "samples; 0: z at the prior's mean; below 1 departs from the paper)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="compute type (default float32)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when there is one)")
    p.add_argument("--out", default=None, help="JSON file to write (default: <checkpoint>-eval.json next to it)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    for flag in ("scenes", "context", "batch_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            sys.exit(f"error: --{flag} must be at least 1, not {value}")
    if args.seed < 0:
        sys.exit(f"error: --seed must be 0 or more, not {args.seed}")
    if args.sigma is not None and not (args.sigma > 0 and math.isfinite(args.sigma)):
        sys.exit(f"error: --sigma must be a positive number, not {args.sigma}")
    if not (args.temperature >= 0 and math.isfinite(args.temperature)):
        sys.exit(f"error: --temperature must be 0 or more, not {args.temperature}")
    try:
        device = pick_device(args.device)
        state = checkpoint.load(args.checkpoint)
        model = checkpoint.build_model(state)
        sigma = args.sigma if args.sigma is not None else checkpoint_sigma(state, args.checkpoint)  # before any rendering
        data_dir = resolve_test_dir(state, args.data_dir)
        dataset = gqn_dataset.SceneViews(data_dir)
        check_context(args.context, dataset.num_views, data_dir)
        scenes = len(dataset) if args.scenes is None else min(args.scenes, len(dataset))
        if args.scenes is not None and args.scenes > len(dataset):
            print(f"note: {data_dir} holds {len(dataset)} scenes; evaluating all of them")
        loader = gqn_dataset.make_eval_loader(data_dir, scenes, min(args.batch_size, scenes), args.context, args.seed)
    except (checkpoint.CheckpointError, gqn_dataset.DatasetError, UsageError) as e:
        sys.exit(f"error: {e}")
    model.to(device)
    print(f"{args.checkpoint} (step {state.get('step', '?')}): {scenes} scenes of {data_dir}, "
          f"{args.context} context views, sigma {sigma:.4g}, seed {args.seed}, on {device}"
          + (f", prior temperature {args.temperature:g}" if args.temperature != 1 else ""))
    metrics = evaluate(model, loader, sigma, device, args.seed, args.dtype, progress=not args.no_progress,
                       temperature=args.temperature)
    metrics.update(checkpoint=os.path.abspath(args.checkpoint), step=state.get("step"), config=state["config"],
                   data_dir=os.path.abspath(data_dir), context=args.context, seed=args.seed,
                   batch_size=min(args.batch_size, scenes), sigma=sigma, dtype=args.dtype,
                   temperature=args.temperature)
    print(format_table(metrics))
    out = args.out or os.path.splitext(args.checkpoint)[0] + "-eval.json"
    try:
        with open(out, "w") as f:
            json.dump(metrics, f, indent=2)
    except OSError as e:
        sys.exit(f"error: cannot write {out} ({e.strerror}); pass --out with a writable file")
    print(f"wrote {out}")



def check_context(context, num_views, data_dir):
    """M context views and a query must be distinct views of a scene: 1 <= context <= S - 1."""
    if not 1 <= context < num_views:
        raise UsageError(f"--context {context} is out of range: the scenes of {data_dir} have {num_views} views, "
                         f"so pass --context between 1 and {num_views - 1}")


def checkpoint_sigma(state, path="the checkpoint"):
    """The pixel sigma the checkpoint's run had reached."""
    from scheduler import SigmaSchedule
    if "sigma_schedule" not in state:
        raise UsageError(f"{path} records no sigma schedule; pass --sigma (e.g. 0.7, the paper's final value)")
    s = SigmaSchedule()
    s.load_state_dict(state["sigma_schedule"])
    return s.sigma


def builtin_test_dir(state):
    """The built-in scenes' test split the checkpoint's run trained next to (the path its run used:
    relative to the working directory, or to this folder where the run was started from here)."""
    args = state.get("args", {})
    if args.get("train_data_dir"):
        raise gqn_dataset.DatasetError("this checkpoint was trained on --train_data_dir data; pass --data_dir with its test split")
    root = builtin_root(args.get("data_root", "data"), args.get("builtin_parts", 7))
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), root)
    if not os.path.isabs(root) and not os.path.isdir(root) and os.path.isdir(here):
        root = here
    return os.path.join(root, "test")


def resolve_test_dir(state, data_dir=None):
    """--data_dir, or the checkpoint's built-in test split, rendered first (as train.py would) when absent."""
    if data_dir is not None:
        return data_dir
    test_dir = builtin_test_dir(state)
    if os.path.isdir(test_dir):
        return test_dir
    from dataset.shepard_metzler import RenderError, ensure_builtin_dataset
    args = state.get("args", {})
    root = os.path.dirname(test_dir)
    print(f"no --data_dir and no {test_dir}: rendering the checkpoint's built-in scenes into {root} (once)")
    try:
        _, test_dir = ensure_builtin_dataset(
            root, parts=args.get("builtin_parts", 7), train_scenes=args.get("builtin_train_scenes", 20_000),
            test_scenes=args.get("builtin_test_scenes", 1_000), seed=0, workers=max(1, min(2, os.cpu_count() or 1)))
    except RenderError as e:
        raise UsageError(f"{e} (or pass --data_dir)") from None
    return test_dir


if __name__ == "__main__":
    main()
