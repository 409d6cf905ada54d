"""The metrics of a rendered query view, the three 3D-blind baselines, and evaluation over held-out scenes:
what train.py logs, evaluate.py prints, and sample.py, explore.py and experiments/ use.

Per scene: -ELBO, KL and NLL (nats), bits per dim, and for each image method (the model's generation and
reconstruction, and the baselines) MSE, PSNR, object IoU, object colour error and NLL above its floor.
The baselines answer "does the model render the scene, or something cheaper?":
- black: an all-black image (what a GQN stuck at the background renders);
- mean context: the pixel-wise mean of the context views;
- nearest context: the context view whose camera position is nearest the query's.
Their ceiling on the built-in scenes (the exact rendering scored against the JPEG frames): experiments/oracle_bound.py.
"""

import json
import math
import os

import torch

import gqn_dataset
from images import comparison_grid
from model import bits_per_dim
from runtime import autocast, noise_seed, split_batch

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
    (1 where neither has any)."""
    a, b = object_masks(image), object_masks(truth)
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def object_colour_error(image, truth):
    """Per image (B,): mean |image - truth| over the true object's pixels and the 3 channels (0 where the
    truth shows no object)."""
    mask = object_masks(truth).float()
    error = (image - truth).abs().mean(dim=1)                          # (B, H, W)
    return (error * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)


def nll_floor(sigma, image_shape):
    """The least negative log-likelihood (nats) any image can have under pixel sigma: every pixel exact
    (at the paper's sigma 0.7 and 64x64x3, 6,909 nats: a loss near it is a plateau, not a good model)."""
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
