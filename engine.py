"""The training step of train.py's loop (and benchmarks/bench.py's): the step itself, the optimizer, saving a
checkpoint, and stopping on a signal. The processes and their noise are distributed.py's; the log is
runlog.py's.
"""

import math
import signal

import torch

import checkpoint
from distributed import all_reduce_sum
from runtime import autocast, split_batch


class TrainingError(Exception):
    """Training cannot go on; the message says why and what to do."""


def train_step(model, optimizer, frames, viewpoints, sigma, device, dtype="float32", skip_nonfinite=False,
               beta=1.0, noise=None):
    """Forward, backward and optimizer step on one batch; returns (-ELBO, kl, nll) as floats. The gradient
    is that of mean(nll + beta * kl): -ELBO for the paper's beta = 1. noise: the model's draws of z (GQN's
    `noise`; distributed.Distributed.batch_noise), None for torch's own."""
    optimizer.zero_grad(set_to_none=True)  # before the forward: last step's gradients need no memory now
    x, v, x_q, v_q = split_batch(frames, viewpoints, device)
    sigma = torch.full((x.shape[0],), sigma, device=device)          # a tensor: see GQN.elbo_terms
    with autocast(device, dtype):
        elbo, kl, nll = model(x, v, v_q, x_q, sigma, terms=True, noise=noise)
    scenes = elbo.shape[0]
    sums = torch.stack([-elbo.detach().float().sum(), kl.detach().float().sum(), nll.detach().float().sum(),
                        torch.tensor(float(scenes), device=elbo.device)])
    loss = (nll.float() + beta * kl.float()).mean()                  # -ELBO when beta = 1
    if torch.distributed.is_initialized():  # the global batch's sums, so every process decides alike
        all_reduce_sum(sums)
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


def make_optimizer(model, lr):
    """Adam as in the paper (beta 0.9, 0.999; eps 1e-8); fused where this build of torch has it."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, foreach=True)


def save_checkpoint(ckpt_dir, step, model, optimizer, schedules, dist, keep, flags):
    """Every process calls this at the same steps; rank 0 writes ckpt_dir/ckpt-<step>.pt (keeping the `keep`
    newest) with the model, its config, the optimizer, the schedules (a dict name -> schedule) and the run's
    flags (a dict). Under DDP the ranks' parameters are compared first (a checksum each), and a divergence
    stops the run. Returns the path written (None on other ranks)."""
    if dist.enabled:
        checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
        sums = dist.gathered(checksum.to(dist.device))
        if len(set(sums)) != 1:
            raise TrainingError(f"step {step}: the processes' parameters differ ({sums}); "
                                f"resume from the last checkpoint in {ckpt_dir}")
    if not dist.main:
        return None
    return checkpoint.write(ckpt_dir, step, keep=keep, model=model.state_dict(), config=model.config,
                            world_size=dist.world_size, optimizer=optimizer.state_dict(),
                            **{name: schedule.state_dict() for name, schedule in schedules.items()},
                            args={k: v for k, v in flags.items()
                                  if isinstance(v, (int, float, str, bool, list, type(None)))})


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
