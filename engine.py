"""What train.py's loop is made of (and benchmarks/bench.py times): the step, the optimizer, the processes,
stopping on a signal, saving a checkpoint, and logging.
"""

import json
import math
import os
import signal
import time

import torch
from torch import nn

import checkpoint
import metrics
from model import bits_per_dim
from runtime import UsageError, autocast, split_batch, write_atomically


class TrainingError(Exception):
    """Training cannot go on; the message says why and what to do."""


def train_step(model, optimizer, frames, viewpoints, sigma, device, dtype="float32", skip_nonfinite=False, beta=1.0):
    """Forward, backward and optimizer step on one batch; returns (-ELBO, kl, nll) as floats. The gradient
    is that of mean(nll + beta * kl): -ELBO for the paper's beta = 1."""
    optimizer.zero_grad(set_to_none=True)  # before the forward: last step's gradients need no memory now
    x, v, x_q, v_q = split_batch(frames, viewpoints, device)
    sigma = torch.full((x.shape[0],), sigma, device=device)          # a tensor: see GQN.elbo_terms
    with autocast(device, dtype):
        elbo, kl, nll = model(x, v, v_q, x_q, sigma, terms=True)
    scenes = elbo.shape[0]
    sums = torch.stack([-elbo.detach().float().sum(), kl.detach().float().sum(), nll.detach().float().sum(),
                        torch.tensor(float(scenes), device=elbo.device)])
    loss = (nll.float() + beta * kl.float()).mean()                  # -ELBO when beta = 1
    if torch.distributed.is_initialized():  # the global batch's sums, so every process decides alike
        torch.distributed.all_reduce(sums)
        # DDP averages the processes' gradients: weighted so, each process's mean counts in proportion to
        # its scenes, and the gradient is the global batch's mean even where a process left out bad scenes
        # (--skip_bad_scenes); with equal parts the weight is exactly 1
        loss = loss * (torch.distributed.get_world_size() * scenes / sums[3].item())
    values = (sums[:3] / sums[3]).tolist()
    if not math.isfinite(values[0]):
        if skip_nonfinite:
            return None
        raise NonFiniteLoss(f"the loss is {values[0]}")
    loss.backward()
    # a finite loss can still have an inf or NaN gradient, and one such step makes every weight NaN; the
    # gradients are the same on every process (DDP averages them), so all decide alike
    norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    if not torch.isfinite(norm):
        optimizer.zero_grad(set_to_none=True)
        if skip_nonfinite:
            return None
        raise NonFiniteLoss(f"the loss is finite ({values[0]:.6g}) but its gradient is not")
    optimizer.step()
    return values


class NonFiniteLoss(RuntimeError):
    pass


def data_parallel_rows(device_ids, batch_size):
    """GPU index -> (start, stop, batch_size): the rows of the batch that nn.DataParallel gives each
    GPU's replica (it splits a batch as tensor.chunk does, into parts of ceil(B / GPUs)); GQN._noise."""
    part = -(-batch_size // len(device_ids))
    return {gpu: (k * part, min(batch_size, (k + 1) * part), batch_size)
            for k, gpu in enumerate(device_ids) if k * part < batch_size}


class BFloat16Replica(nn.Module):
    """The model, its forward under bfloat16 autocast, for nn.DataParallel: it runs each GPU's replica in
    a thread of its own and enters autocast there again without the dtype, which on CUDA is float16
    (with no gradient scaling: gradients can underflow); entered once more in the replica, bfloat16 holds."""

    def __init__(self, module, device_type):
        super().__init__()
        self.module, self.device_type = module, device_type

    def forward(self, *args, **kwargs):
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.module(*args, **kwargs)


def keep_freed_memory():
    """Ask glibc to serve every block from its heap and keep freed memory there.

    By default blocks over 32 MiB (gradients, optimizer buffers, large activations) are mapped fresh
    and handed back to the system when freed, so every training step page-faults gigabytes in again
    (on a CPU a sizeable share of the default model's step: benchmarks/README.md). Elsewhere than glibc: nothing."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap
        libc.mallopt(-4, 0)        # M_MMAP_MAX = 0: no block gets its own mapping
    except (OSError, AttributeError):
        pass


def make_optimizer(model, lr):
    """Adam as in the paper (beta 0.9, 0.999; eps 1e-8); fused where this build of torch has it."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, foreach=True)


class Distributed:
    """torchrun's environment: rank, world size and this process's device."""

    def __init__(self, device_ids):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world_size > 1
        if torch.cuda.is_available():
            index = self.local_rank if self.enabled else device_ids[0]
            count = torch.cuda.device_count()
            wanted = [index] if self.enabled else device_ids
            if any(not 0 <= i < count for i in wanted):
                what = (f"process {self.local_rank} of this machine needs GPU {index}" if self.enabled
                        else f"--device_ids {' '.join(map(str, device_ids))} names a GPU it does not have")
                raise UsageError(f"this machine has {count} CUDA GPU(s), numbered 0 to {count - 1}, and {what}; "
                                 + ("start at most that many processes per machine (torchrun --nproc_per_node)"
                                    if self.enabled else f"pass ids between 0 and {count - 1}"))
            self.device = torch.device("cuda", index)
            torch.cuda.set_device(self.device)
        else:
            if not self.enabled and list(device_ids) != [0]:
                raise UsageError(f"this machine has no CUDA GPU, and --device_ids {' '.join(map(str, device_ids))} "
                                 f"asks for GPUs; leave --device_ids out to train on the CPU")
            self.device = torch.device("cpu")
        if self.enabled:
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.main = self.rank == 0

    def any(self, *flags):
        """Per flag, whether any process has it set (one all_reduce), so that every process decides alike:
        a process that stopped or skipped a step alone would wait in a collective the others never reach."""
        if not self.enabled:
            return [bool(f) for f in flags]
        t = torch.tensor([float(bool(f)) for f in flags], device=self.device)
        torch.distributed.all_reduce(t)
        return [value > 0 for value in t.tolist()]

    def shared(self, value):
        """Process 0's whole number, on every process."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        torch.distributed.broadcast(t, src=0)
        return int(t.item())

    def close(self):
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def save_checkpoint(ckpt_dir, step, model, optimizer, schedules, dist, keep, flags):
    """Every process calls this at the same steps; rank 0 writes ckpt_dir/ckpt-<step>.pt (keeping the `keep`
    newest) with the model, its config, the optimizer, the schedules (a dict name -> schedule) and the run's
    flags (a dict). Under DDP the ranks' parameters are compared first (a checksum each), and a divergence
    stops the run. Returns the path written (None on other ranks)."""
    if dist.enabled:
        checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
        sums = [torch.zeros_like(checksum) for _ in range(dist.world_size)]
        torch.distributed.all_gather(sums, checksum.to(dist.device) if dist.device.type == "cuda" else checksum)
        if len({s.item() for s in sums}) != 1:
            raise TrainingError(f"step {step}: the processes' parameters differ ({[s.item() for s in sums]}); "
                                f"resume from the last checkpoint in {ckpt_dir}")
    if not dist.main:
        return None
    return checkpoint.write(ckpt_dir, step, keep=keep, model=model.state_dict(), config=model.config,
                            world_size=dist.world_size, optimizer=optimizer.state_dict(),
                            **{name: schedule.state_dict() for name, schedule in schedules.items()},
                            args={k: v for k, v in flags.items() if isinstance(v, (int, float, str, bool, list, type(None)))})


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
    values, images = metrics.evaluate_batch(model, x, v, x_q, v_q, sigma, dtype,
                                            labels=None if labels is None else labels.to(device))
    per_image = ["mse", "iou", "colour_error", "nll_above_floor"] + (list(metrics.REGION_METRICS) if labels is not None else [])
    names = ["neg_elbo", "kl", "nll", "bits_per_dim"] + [
        f"{name}_{method}" for method in ("generation", "reconstruction", "mean_context") for name in per_image]
    scalars = {name: values[name][~torch.isnan(values[name])].mean().item() for name in names}
    for name, value in scalars.items():
        writer.add_scalar(f"test/{name}", value, step)
    nrow = min(8, x_q.shape[0])
    writer.add_image("test/ground_truth", make_grid(x_q[:nrow], nrow), step)
    writer.add_image("test/reconstruction", make_grid(images["reconstruction"][:nrow], nrow), step)
    writer.add_image("test/generation", make_grid(images["generation"][:nrow], nrow), step)
    return scalars


class StopFlag:
    """SIGINT / SIGTERM ask the loop to stop after the current step and save a checkpoint."""

    def __init__(self):
        self.requested = None
        self.previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass

    def _handle(self, signum, frame):
        if self.requested:  # a second signal: stop at once
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def restore(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


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
        def write(tmp):
            with open(tmp, "w") as f:
                f.writelines(kept)
        write_atomically(path, write)
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
            drop_rows_after(os.path.join(run_dir, "test_metrics.jsonl"), step)  # a resumed run redoes the steps
            last = drop_rows_after(os.path.join(run_dir, "metrics.jsonl"), step)  # after its checkpoint
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
            self.bar.set_postfix_str(f"loss {loss:.1f} kl {kl:.1f} sigma {sigma:.3f} lr {lr:.2e} {rate:.2f} steps/s")
        scalars = dict(neg_elbo=loss, kl=kl, nll=nll, bits_per_dim=bits_per_dim(loss, image_shape),
                       sigma=sigma, lr=lr, beta=beta)
        for name, value in scalars.items():
            self.writer.add_scalar(f"train/{name}", value, step)
        self.metrics.write(json.dumps(dict(step=step, loss=loss, kl=kl, nll=nll, sigma=sigma, lr=lr, beta=beta,
                                           seconds=round(now - self.start, 3))) + "\n")
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
