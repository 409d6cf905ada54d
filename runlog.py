"""A training run's log: the progress bar, TensorBoard, and metrics.jsonl / test_metrics.jsonl (`RunLog`),
with what a resumed run drops from them (`drop_rows_after`) and the test metrics it logs (`log_test`).
"""

import json
import os
import time

import torch

import metrics
from atomic_file import AtomicFile
from model import bits_per_dim
from runtime import split_batch


def drop_rows_after(path, step):
    """Keep the JSON lines of `path` whose "step" is at most `step` (and drop a line cut off by a kill), so
    the steps a resumed run redoes are not logged twice; written atomically. Returns the last kept row (a
    dict), or None if there is none or no file."""
    if not os.path.exists(path):
        return None
    kept, changed, last = [], False, None
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
                keep = line.endswith("\n") and row.get("step", 0) <= step
            except ValueError:
                keep = False
            if keep:
                kept.append(line)
                last = row
            changed |= not keep
    if changed:
        with AtomicFile(path) as f:
            f.writelines(line.encode() for line in kept)
    return last


class RunLog:
    """Where a run's progress goes, from one call per step: the tqdm bar (its rate at most once a second),
    TensorBoard (train/..., test/... and image grids) and, as JSON lines, <run>/metrics.jsonl (every step)
    and <run>/test_metrics.jsonl (every test). Only the main process writes; elsewhere each call does nothing.
    Their "seconds" is the run's training time: a resumed run goes on from the seconds of the last step it
    kept, so the time between the processes (the run stopped) is not counted."""

    def __init__(self, run_dir, total_steps, step, enabled):
        self.enabled, self.run_dir = enabled, run_dir
        self.writer = self.metrics = None
        from tqdm import tqdm
        self.bar = tqdm(total=total_steps, initial=step, disable=not enabled, dynamic_ncols=True)
        self.start = self.last_time = time.time()
        self.last_step = step
        if enabled:
            from tensorboardX import SummaryWriter
            # a resumed run redoes the steps after its checkpoint
            drop_rows_after(os.path.join(run_dir, "test_metrics.jsonl"), step)
            last = drop_rows_after(os.path.join(run_dir, "metrics.jsonl"), step)
            self.start -= (last or {}).get("seconds", 0)
            self.writer = SummaryWriter(run_dir)
            self.metrics = open(os.path.join(run_dir, "metrics.jsonl"), "a")

    def step(self, step, loss, kl, nll, sigma, lr, beta, image_shape):
        if not self.enabled:
            return
        now = time.time()
        self.bar.update(1)
        if now - self.last_time > 1 or step == self.bar.total:
            rate = (step - self.last_step) / (now - self.last_time)
            self.last_time, self.last_step = now, step
            self.bar.set_postfix_str(f"loss {loss:.1f} kl {kl:.1f} sigma {sigma:.3f} lr {lr:.2e} "
                                     f"{rate:.2f} steps/s")
        scalars = dict(neg_elbo=loss, kl=kl, nll=nll, bits_per_dim=bits_per_dim(loss, image_shape),
                       sigma=sigma, lr=lr, beta=beta)
        for name, value in scalars.items():
            self.writer.add_scalar(f"train/{name}", value, step)
        self.metrics.write(json.dumps(dict(step=step, loss=loss, kl=kl, nll=nll, sigma=sigma, lr=lr,
                                           beta=beta, seconds=round(now - self.start, 3))) + "\n")
        self.metrics.flush()

    def count(self, name, value, step):
        """A running count (skipped steps, bad scenes) to TensorBoard as train/<name>."""
        if self.enabled:
            self.writer.add_scalar(f"train/{name}", value, step)

    def test(self, model, batch, step, sigma, device, dtype):
        if not self.enabled:
            return None
        scalars = log_test(self.writer, model, batch, step, sigma, device, dtype)
        with open(os.path.join(self.run_dir, "test_metrics.jsonl"), "a") as f:
            f.write(json.dumps(dict(step=step, seconds=round(time.time() - self.start, 3), **scalars)) + "\n")
        return scalars

    def seconds(self):
        return time.time() - self.start

    def close(self):
        self.bar.close()
        if self.writer:
            self.writer.close()
            self.writer = None
        if self.metrics:
            self.metrics.close()
            self.metrics = None


@torch.no_grad()
def log_test(writer, model, batch, step, sigma, device, dtype):
    """Test -ELBO, KL, NLL, bits per dim, and the MSE, object IoU, object colour error and NLL above its
    floor of generations and reconstructions (with labels, the wall, floor and object metrics too), to
    TensorBoard with image grids, from metrics.evaluate_batch (one ELBO pass plus one generation); returns
    the scalars by name. batch: metrics.fixed_batch's (frames, viewpoints, labels or None)."""
    from images import make_grid
    model.eval()
    frames, viewpoints, labels = batch
    x, v, x_q, v_q = split_batch(frames, viewpoints, device)
    if labels is not None:
        labels = metrics.QueryLabels(labels.values.to(device), labels.scheme)
    values, images = metrics.evaluate_batch(model, x, v, x_q, v_q, sigma, dtype, labels=labels)
    per_image = ["mse", "iou", "colour_error", "nll_above_floor"]
    if labels is not None:
        per_image += labels.scheme.metric_names()
    names = ["neg_elbo", "kl", "nll", "bits_per_dim"] + [
        f"{name}_{method}" for method in ("generation", "reconstruction", "mean_context")
        for name in per_image]
    scalars = {name: values[name][~torch.isnan(values[name])].mean().item() for name in names}
    for name, value in scalars.items():
        if value == value:  # a region no query view of the batch shows has no value (NaN): nothing to draw
            writer.add_scalar(f"test/{name}", value, step)
    nrow = min(8, x_q.shape[0])
    writer.add_image("test/ground_truth", make_grid(x_q[:nrow], nrow), step)
    writer.add_image("test/reconstruction", make_grid(images["reconstruction"][:nrow], nrow), step)
    writer.add_image("test/generation", make_grid(images["generation"][:nrow], nrow), step)
    return scalars
