"""The metrics of a rendered query view, the three 3D-blind baselines, and evaluation over held-out scenes:
what train.py logs, evaluate.py prints, and sample.py, explore.py and experiments/ use.

Per scene: -ELBO, KL and NLL (nats), bits per dim, and for each image method (the model's generation and
reconstruction, and the baselines) MSE, PSNR, object IoU, object colour error and NLL above its floor.
The baselines answer "does the model render the scene, or something cheaper?":
- black: an all-black image (what a GQN stuck at the background renders);
- mean context: the pixel-wise mean of the context views;
- nearest context: the context view whose camera position is nearest the query's.
Their ceiling on the built-in scenes (the exact rendering scored against the JPEG frames):
experiments/oracle_bound.py.

On scenes with per-pixel labels (the built-in scenes' test splits; dataset/labels.py's schemes) each
method also gets region metrics: the colour error over the true pixels of each region the scheme scores
(rooms and mazes: wall, floor, object; jaco: arm, target, floor), and an IoU per region it names (rooms:
object; jaco: arm, target), where a rendered pixel counts as a region's when its colour is nearest the mean
colour of that region's true pixels rather than of any other label's. On data without labels they are
absent, never guessed.
"""

import json
import math
import os

import numpy as np
import torch
from torch.nn import functional as F

import gqn_dataset
from typing import NamedTuple

from dataset.labels import ROOMS_SCHEME, LabelScheme
from images import comparison_grid
from model import bits_per_dim
from runtime import autocast, noise_seed, split_batch

METRICS = ("neg_elbo", "kl", "nll", "bits_per_dim")
IMAGE_METHODS = ("generation", "reconstruction", "black", "mean_context", "nearest_context")
# per image method: what a person sees (is the object there, in its shape, in its colours?)
IMAGE_METRICS = ("mse", "psnr", "iou", "colour_error", "nll_above_floor")
# a pixel is the object's when its largest channel exceeds this (the background is black)
OBJECT_THRESHOLD = 0.1


class QueryLabels(NamedTuple):
    """The labels of a batch's query views, (B, H, W), and the scheme that names their values."""
    values: torch.Tensor
    scheme: LabelScheme


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


def mask_iou(a, b):
    """Per image (B,): intersection over union of two pixel masks (B, H, W) (1 where both are empty)."""
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def object_iou(image, truth):
    """Per image (B,): IoU of the object's pixels in `image` and in `truth`, each found by brightness
    (object_masks: the scenes' black background); the metrics' "iou_*"."""
    return mask_iou(object_masks(image), object_masks(truth))


def masked_colour_error(image, truth, mask):
    """Per image (B,): mean |image - truth| over the pixels of `mask` (B, H, W) and the channels (0 where the
    mask is empty), and the mask's pixel counts (B,)."""
    mask = mask.float()
    error = (image - truth).abs().mean(dim=1)                          # (B, H, W)
    count = mask.flatten(1).sum(1)
    return (error * mask).flatten(1).sum(1) / count.clamp_min(1), count


def object_colour_error(image, truth):
    """Per image (B,): mean |image - truth| over the true object's pixels and the 3 channels (0 where the
    truth shows no object)."""
    return masked_colour_error(image, truth, object_masks(truth))[0]


def nll_floor(sigma, image_shape):
    """The least negative log-likelihood (nats) any image can have under pixel sigma: every pixel exact
    (at the paper's sigma 0.7 and 64x64x3, 6,909 nats: a loss near it is a plateau, not a good model)."""
    return math.prod(image_shape) * (math.log(sigma) + 0.5 * math.log(2 * math.pi))


def nll_above_floor(image, truth, sigma):
    """Per image (B,): the Gaussian NLL of `truth` around `image`, less its floor:
    sum (x - mu)^2 / (2 sigma^2)."""
    return ((image - truth) ** 2).flatten(1).sum(1) / (2 * sigma ** 2)


def region_error(image, truth, mask):
    """Per image (B,): mean |image - truth| over the pixels of a region's `mask` (B, H, W) and the channels;
    NaN where the truth has no such pixel."""
    error, count = masked_colour_error(image, truth, mask)
    return torch.where(count > 0, error, torch.full_like(error, float("nan")))


def region_iou_by_colour(image, truth, labels, scheme=ROOMS_SCHEME, region="object"):
    """Per image (B,): IoU of a region's true pixels (scheme.mask) and its rendered ones, a rendered pixel
    being the region's when its colour is nearest the mean true colour of a label of that region rather than
    of any other label in view (1 where neither has a pixel of it); the metrics' "<region>_iou_*", for scenes
    with labels and no black background."""
    classes = int(labels.max().item()) + 1
    onehot = F.one_hot(labels.long(), classes).permute(0, 3, 1, 2).float()          # (B, C, H, W)
    count = onehot.flatten(2).sum(-1)                                                # (B, C)
    means = torch.einsum("bchw,bkhw->bck", onehot, truth) / count.clamp_min(1)[..., None]   # (B, C, 3)
    distance = ((image[:, None] - means[..., None, None]) ** 2).sum(2)              # (B, C, H, W)
    distance = distance.masked_fill(count[..., None, None] == 0, float("inf"))       # classes not in view
    return mask_iou(scheme.mask(distance.argmin(dim=1), region), scheme.mask(labels, region))


def region_metrics(image, truth, labels, scheme=ROOMS_SCHEME):
    """The region metrics (scheme.metric_names) of one image method against the truth with its labels
    (B, H, W), each (B,)."""
    out = {f"{r}_error": region_error(image, truth, scheme.mask(labels, r)) for r in scheme.errors}
    out.update({f"{r}_iou": region_iou_by_colour(image, truth, labels, scheme, r) for r in scheme.ious})
    return out


@torch.no_grad()
def evaluate_batch(model, x, v, x_q, v_q, sigma, dtype="float32", temperature=1.0, labels=None):
    """Per-scene metrics of one batch, each (B,), plus the images: one ELBO pass and one generation. With the
    query views' labels (a QueryLabels), the region metrics too (NaN for an image without that region)."""
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
        if labels is not None:
            out.update({f"{metric}_{name}": value
                        for metric, value in region_metrics(image, x_q, *labels).items()})
    # the model's own term: its NLL (of the unclamped posterior mean) above the floor
    out["nll_above_floor_reconstruction"] = out["nll"] - nll_floor(sigma, x_q.shape[1:])
    return out, images


@torch.no_grad()
def evaluate(model, loader, sigma, device, seed=0, dtype="float32", progress=True, temperature=1.0,
             first=None, labels=None):
    """Mean of every metric over all the loader's scenes (a make_eval_loader); with the split's labels
    (gqn_dataset.open_labels), the region metrics too, each a mean over the scenes whose query view shows that
    region (NaN where none does). Deterministic for a given model and seed. A dict `first` receives the first
    batch's x, x_q and images, the ones scored (final_report draws them)."""
    from tqdm import tqdm
    model.eval()
    sums, counts, scenes = {}, {}, 0
    # with labels: the batches' (scene, views), in the loader's order, to find each query view's labels
    keys = None if labels is None else iter(loader.batch_sampler)
    for i, (frames, viewpoints) in enumerate(tqdm(loader, desc="evaluating", disable=not progress,
                                                  leave=False)):
        torch.manual_seed(noise_seed(seed, i))                            # the noise of batch i
        x, v, x_q, v_q = split_batch(frames, viewpoints, device)
        query_labels = None if keys is None else query_view_labels(labels, next(keys), device)
        out, images = evaluate_batch(model, x, v, x_q, v_q, sigma, dtype, temperature, query_labels)
        if i == 0 and first is not None:
            first.update(x=x, x_q=x_q, **images)
        for k, value in out.items():
            shown = ~torch.isnan(value)
            sums[k] = sums.get(k, 0.0) + value[shown].sum().item()
            counts[k] = counts.get(k, 0) + int(shown.sum())
        scenes += x.shape[0]
    # a region no query view shows (objects, in mazes) has no mean: NaN
    return {k: s / counts[k] if counts[k] else math.nan for k, s in sums.items()} | dict(scenes=scenes)


def query_view_labels(labels, keys, device):
    """The QueryLabels of the query views of a batch's keys [(scene, views)], the query last, from a split's
    SceneLabels; None without labels."""
    if labels is None:
        return None
    values = np.stack([labels.view(scene, views[-1]) for scene, views in keys])
    return QueryLabels(torch.from_numpy(values).to(device), labels.scheme)


def fixed_batch(test_dir, batch_size, context, seed):
    """One deterministic batch of test scenes (the first `batch_size`), for the training logs: frames,
    viewpoints and the query views' QueryLabels (None where the split has none)."""
    dataset = gqn_dataset.SceneViews(test_dir)
    batch_size = min(batch_size, len(dataset))
    context = min(context, dataset.num_views - 1)
    loader = gqn_dataset.make_eval_loader(test_dir, batch_size, batch_size, context, seed)
    frames, viewpoints = next(iter(loader))
    return frames, viewpoints, query_view_labels(gqn_dataset.open_labels(test_dir),
                                                 next(iter(loader.batch_sampler)), "cpu")


def format_table(metrics):
    """-ELBO and its terms, then one row per image method: MSE, PSNR, object IoU, object colour error,
    NLL above its floor."""
    lines = [f"{'':16s}{'value':>12s}"]
    lines += [f"{k:16s}{metrics[k]:12.4f}" for k in METRICS]
    lines.append(image_table(metrics))
    return "\n".join(lines)


def region_names(metrics):
    """The region metrics (names without the method) that `metrics` holds, in table order."""
    from dataset.labels import SCHEMES
    for scheme in SCHEMES.values():
        names = scheme.metric_names()
        if all(f"{n}_generation" in metrics for n in names):
            return names
    return []


def image_table(metrics, methods=IMAGE_METHODS, indent=""):
    """One row per image method; with region metrics (labelled scenes) their columns too."""
    regions = region_names(metrics)
    head = (f"{indent}{'query view':16s}{'MSE':>10s}{'PSNR (dB)':>11s}{'IoU':>8s}"
            f"{'colour err':>12s}{'NLL-floor':>11s}")
    titles = {n: n.replace("_error", " err").replace("_iou", " IoU") for n in regions}
    head += "".join(f"{titles[n]:>{max(10, len(titles[n]) + 2)}s}" for n in regions)
    lines = [head]
    for m in methods:
        line = (f"{indent}{m:16s}{metrics['mse_' + m]:10.5f}{metrics['psnr_' + m]:11.2f}"
                f"{metrics['iou_' + m]:8.3f}"
                f"{metrics['colour_error_' + m]:12.4f}{metrics['nll_above_floor_' + m]:11.1f}")
        for n in regions:
            width, digits = max(10, len(titles[n]) + 2), 3 if n.endswith("_iou") else 4
            line += f"{metrics[f'{n}_{m}']:{width}.{digits}f}"
        lines.append(line)
    return "\n".join(lines)


def final_report(model, test_dir, run_dir, scenes, context, seed, device, sigma, log=print, dtype="float32"):
    """The end of a training run: metrics on held-out scenes against the baselines, final.json, final.png."""
    from images import save_png
    dataset = gqn_dataset.SceneViews(test_dir)
    scenes = min(scenes, len(dataset))
    context = min(context, dataset.num_views - 1)
    loader = gqn_dataset.make_eval_loader(test_dir, scenes, 32, context, seed)
    first = {}
    # the metrics, and the first batch's images into `first`
    metrics = evaluate(model, loader, sigma, device, seed, dtype, first=first,
                       labels=gqn_dataset.open_labels(test_dir))
    x = first["x"][:8]
    columns = ([x[:, k] for k in range(x.shape[1])]
               + [first[k][:8] for k in ("x_q", "reconstruction", "generation")])
    save_png(comparison_grid(columns), os.path.join(run_dir, "final.png"))
    with open(os.path.join(run_dir, "final.json"), "w") as f:
        json.dump(dict(metrics, context=context, seed=seed, sigma=sigma), f, indent=2)
    log(f"held-out scenes: {scenes}, context views: {context}, sigma {sigma:.3g}; the query view "
        f"(IoU and colour error over the object's pixels, NLL in nats above its floor):")
    log(image_table(metrics, indent="  "))
    log(f"  KL {metrics['kl']:.1f} nats; generation MSE / mean-context MSE = "
        f"{metrics['mse_generation'] / metrics['mse_mean_context']:.2f}")
    better = min(metrics["mse_mean_context"], metrics["mse_nearest_context"])
    line = (f"  generation MSE / the better 3D-blind baseline's (mean or nearest context view) = "
            f"{metrics['mse_generation'] / better:.2f}")
    for name in region_names(metrics):        # labels: each IoU of a region some query view shows
        region = name[:-len("_iou")]
        if name.endswith("_iou") and math.isfinite(metrics.get(f"{region}_error_generation", math.nan)):
            line += (f"; {region} IoU {metrics[name + '_generation']:.3f} "
                     f"(mean context {metrics[name + '_mean_context']:.3f}, "
                     f"nearest {metrics[name + '_nearest_context']:.3f})")
    log(line)
    beaten = all(metrics["mse_generation"] < metrics[f"mse_{b}"]
                 for b in ("black", "mean_context", "nearest_context"))
    log("generations beat all three baselines" if beaten
        else "generations do NOT yet beat all three baselines")
    log(f"wrote {os.path.join(run_dir, 'final.png')} (context | truth | reconstruction | generation) "
        f"and final.json")
    return metrics
