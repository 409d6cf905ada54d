"""Train a Generative Query Network (Eslami et al. 2018, Algorithm S1).

Commands:

    # the demo: renders built-in Shepard-Metzler scenes (once) and trains a small GQN on the CPU
    python train.py --preset demo

    # the paper's model on converted DeepMind data (see dataset/convert2torch.py)
    python train.py --train_data_dir /path/to/dataset/train --test_data_dir /path/to/dataset/test

    # several GPUs in one process (the original's DataParallel)
    python train.py --device_ids 0 1 2 3 --train_data_dir ... --test_data_dir ...

    # several GPUs, one process each (DistributedDataParallel; preferred)
    torchrun --standalone --nproc_per_node=4 train.py --train_data_dir ... --test_data_dir ...

    # several machines: run on each, with its own --node_rank
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_backend=c10d \\
        --rdzv_endpoint=HOST:29500 train.py --train_data_dir ... --test_data_dir ...

    # continue a run from its newest checkpoint (same --root_log_dir / --log_dir)
    python train.py ... --resume

Watch it with `tensorboard --logdir runs` (pip install tensorboard). Everything a run writes goes to <root_log_dir>/<log_dir>:
TensorBoard events, checkpoints/ckpt-<step>.pt (model, optimizer, schedules, step, RNG, config)
and, at the end, final.png and final.json (held-out scenes against three baselines).
"""

import argparse
import json
import math
import os
import signal
import sys
import time

import torch
from torch import nn

import checkpoint as ckpt_io
import evaluate
from evaluate import split_batch
import gqn_dataset
from dataset.shepard_metzler import RenderError
from gqn_dataset import DatasetError
from model import GQN, bits_per_dim
from representation import kaiming_init
from scheduler import AnnealingStepLR, KLWeightSchedule, SigmaSchedule

# Presets set the defaults of flags the user did not give. "paper" is the original's setting.
PRESETS = {
    "paper": dict(),
    "demo": dict(  # a small GQN that learns the built-in scenes on 2 CPU cores in under 10 minutes
        # (experiments/sweep.py: the tower's 16x16 r, and sigma brought to 0.3 after 200 steps, are
        # what get shapes into its generations this soon; at the paper's sigma 0.7 it stays a blob)
        representation="tower", layers=4, shared_core=True, upsample="broadcast", h_dim=32,
        r_dim=32, z_dim=3, batch_size=16, gradient_steps=750, mu_i=1e-3, mu_f=3e-4, mu_n=750,
        sigma_i=1.0, sigma_f=0.3, sigma_n=200, min_context=2, max_context=5, log_interval=250,
        save_interval=250, workers=1, builtin_parts=5, builtin_train_scenes=4000, builtin_test_scenes=200,
        seed=0,
    ),
}

DEFAULTS = dict(
    gradient_steps=2_000_000, batch_size=36, dataset="Shepard-Metzler", train_data_dir=None,
    test_data_dir=None, root_log_dir="runs", log_dir="GQN", log_interval=100, save_interval=10_000,
    workers=None, device_ids=[0], representation="pool", layers=12, shared_core=False,
    upsample="learned", h_dim=128, r_dim=256, z_dim=3, seed=None, mu_i=5e-4, mu_f=5e-5, mu_n=1.6e6,
    sigma_i=2.0, sigma_f=0.7, sigma_n=2e5, dtype="float32", compile=False, keep=5,
    data_root="data", builtin_parts=7, builtin_train_scenes=20_000, builtin_test_scenes=1_000,
    test_context=3, eval_scenes=200, skip_nonfinite=False, skip_bad_scenes=False, min_context=1,
    max_context=None, beta_i=1.0, beta_f=1.0, beta_n=1, init="torch",
)


def str2bool(s):
    """'true'/'false' (and yes/no, 1/0, on/off) -> bool; torch-gqn's type=bool read 'False' as True."""
    value = str(s).strip().lower()
    if value in ("true", "t", "yes", "y", "1", "on"):
        return True
    if value in ("false", "f", "no", "n", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")


def positive_int(s):
    value = int(float(s))  # accepts 2e6 as the original's defaults are written
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {s!r}")
    return value


def nonnegative_int(s):
    value = int(s)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {s!r}")
    return value


def positive_float(s):
    value = float(s)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {s!r}")
    return value


def build_parser():
    p = argparse.ArgumentParser(description="Train a Generative Query Network (Eslami et al. 2018).")
    S = argparse.SUPPRESS  # defaults are applied after the preset, so we can tell what was given
    a = p.add_argument
    a("--preset", choices=sorted(PRESETS), default="paper",
      help="default values for the flags not given: 'paper' (the original's) or 'demo' (small, CPU)")
    # the original's flags
    a("--gradient_steps", type=positive_int, default=S, help="number of training steps (paper: 2e6)")
    a("--batch_size", type=positive_int, default=S, help="scenes per step, over all GPUs/processes (paper: 36)")
    a("--dataset", default=S, help="Shepard-Metzler, Room, Jaco or Labyrinth: sets the most context views K")
    a("--train_data_dir", default=S, help="training split folder; absent: the built-in rendered scenes")
    a("--test_data_dir", default=S, help="test split folder; absent: the built-in scenes' test split")
    a("--root_log_dir", default=S, help="folder of all runs")
    a("--log_dir", default=S, help="this run's folder under --root_log_dir")
    a("--log_interval", type=positive_int, default=S, help="steps between test metrics and images")
    a("--save_interval", type=positive_int, default=S, help="steps between checkpoints")
    a("--workers", type=nonnegative_int, default=S,
      help="DataLoader worker processes per training process (default: 1 on CPU, up to 8 per GPU)")
    a("--device_ids", type=int, nargs="+", default=S, help="CUDA devices; several wrap DataParallel")
    a("--representation", choices=["pool", "tower", "pyramid"], default=S, help="representation network")
    a("--layers", type=positive_int, default=S, help="number of generative layers L (paper: 12)")
    a("--shared_core", type=str2bool, nargs="?", const=True, default=S,
      help="one core for all L steps (true/false; the flag alone means true)")
    a("--seed", type=int, default=S, help="random seed: the same seed gives the same run (default: drawn and logged)")
    # this project's flags
    a("--min_context", type=positive_int, default=S,
      help="least context views M per training batch; the paper draws M ~ Uniform{1..K} (departs from it when > 1)")
    a("--max_context", type=positive_int, default=S,
      help="most context views K per training batch (default: set by --dataset, as the paper; departs from it when given)")
    a("--resume", nargs="?", const="latest", default=None,
      help="continue from the newest checkpoint in the log folder, or from the given file")
    a("--upsample", choices=["learned", "broadcast"], default=S,
      help="how v_q and r reach the 16x16 core: learned transposed convs (original) or broadcasting")
    a("--h_dim", type=positive_int, default=S, help="conv-LSTM hidden channels (paper: 128)")
    a("--r_dim", type=positive_int, default=S, help="representation channels (paper: 256)")
    a("--z_dim", type=positive_int, default=S, help="latent channels (paper: 3)")
    a("--mu_i", type=positive_float, default=S, help="initial learning rate")
    a("--mu_f", type=positive_float, default=S, help="final learning rate")
    a("--mu_n", type=positive_float, default=S, help="steps over which the learning rate anneals")
    a("--sigma_i", type=positive_float, default=S, help="initial pixel standard deviation")
    a("--sigma_f", type=positive_float, default=S, help="final pixel standard deviation")
    a("--sigma_n", type=positive_float, default=S, help="steps over which sigma anneals")
    a("--init", choices=["torch", "kaiming"], default=S,
      help="initial weights of the representation network: PyTorch's defaults (torch-gqn's) or He-normal "
           "with zero biases, which lets the image through at the start (the paper does not say)")
    a("--beta_i", type=positive_float, default=S,
      help="initial weight of the KL term in the training loss (paper: 1, no weight; departs from it when not 1)")
    a("--beta_f", type=positive_float, default=S, help="final KL weight (paper: 1)")
    a("--beta_n", type=positive_float, default=S, help="steps over which the KL weight anneals from --beta_i to --beta_f")
    a("--dtype", choices=["float32", "bfloat16"], default=S, help="compute type (bfloat16: autocast)")
    a("--compile", type=str2bool, nargs="?", const=True, default=S, help="torch.compile the model")
    a("--keep", type=positive_int, default=S, help="how many newest checkpoints to keep")
    a("--data_root", default=S, help="where the built-in scenes are rendered and cached")
    a("--builtin_parts", type=int, choices=[5, 7], default=S, help="cubes per built-in object")
    a("--builtin_train_scenes", type=positive_int, default=S, help="built-in training scenes")
    a("--builtin_test_scenes", type=positive_int, default=S, help="built-in test scenes")
    a("--test_context", type=positive_int, default=S, help="context views in test metrics and the final evaluation")
    a("--eval_scenes", type=nonnegative_int, default=S, help="held-out scenes in the final evaluation (0: none)")
    a("--skip_nonfinite", type=str2bool, nargs="?", const=True, default=S,
      help="skip a step whose loss is not finite (counted in the logs) instead of stopping")
    a("--skip_bad_scenes", type=str2bool, nargs="?", const=True, default=S,
      help="leave out (and count in the logs) scenes that fail their checks instead of stopping")
    for action in p._actions:  # say each default (and the demo's) in --help
        if action.dest in DEFAULTS:
            demo = PRESETS["demo"].get(action.dest)
            if DEFAULTS[action.dest] is not None:
                action.help += f" (default: {DEFAULTS[action.dest]}" + (f"; demo: {demo})" if demo is not None else ")")
            elif demo is not None:
                action.help += f" (demo: {demo})"
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    given = set(vars(args))
    merged = {**DEFAULTS, **PRESETS[args.preset], **{k: v for k, v in vars(args).items() if k in given}}
    args = argparse.Namespace(**merged)
    args.given = sorted(given - {"preset", "resume"})
    return args


def model_config(args):
    return dict(representation=args.representation, L=args.layers, shared_core=args.shared_core,
                upsample=args.upsample, r_dim=args.r_dim, h_dim=args.h_dim, z_dim=args.z_dim)


# -- one training step: the code bench.py times too ----------------------------------------------

def autocast(device, dtype):
    """bfloat16 autocast for dtype "bfloat16", else a context that changes nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=(dtype == "bfloat16"))


def train_step(model, optimizer, frames, viewpoints, sigma, device, dtype="float32", skip_nonfinite=False, beta=1.0):
    """Forward, backward and optimizer step on one batch; returns (-ELBO, kl, nll) as floats. The gradient
    is that of mean(nll + beta * kl): -ELBO for the paper's beta = 1."""
    optimizer.zero_grad(set_to_none=True)  # before the forward: last step's gradients need no memory now
    x, v, x_q, v_q = split_batch(frames, viewpoints, device)
    with autocast(device, dtype):
        elbo, kl, nll = model(x, v, v_q, x_q, sigma, terms=True)
    values = torch.stack([-elbo.detach().float().mean(), kl.detach().float().mean(), nll.detach().float().mean()])
    loss = (nll.float() + beta * kl.float()).mean()                  # -ELBO when beta = 1
    if torch.distributed.is_initialized():  # the global batch's means, so every process decides alike
        torch.distributed.all_reduce(values)
        values /= torch.distributed.get_world_size()
    values = values.tolist()
    if not math.isfinite(values[0]):
        if skip_nonfinite:
            return None
        raise NonFiniteLoss(f"the loss is {values[0]}")
    loss.backward()
    optimizer.step()
    return values


def step_seed(seed, step):
    """The seed of the torch generator for training step `step` (0-based) of a run seeded `seed`."""
    return (seed * 1_000_003 + step) % (2 ** 63)


class NonFiniteLoss(RuntimeError):
    pass


def keep_freed_memory():
    """Ask glibc to serve every block from its heap and keep freed memory there.

    By default blocks over 32 MiB (gradients, optimizer buffers, large activations) are mapped fresh
    and handed back to the system when freed, so every training step page-faults gigabytes in again:
    on a CPU that cost about 17 % of the default model's step (bench.py). Elsewhere than glibc: nothing."""
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


# -- the run ------------------------------------------------------------------------------------

class Distributed:
    """torchrun's environment: rank, world size and this process's device."""

    def __init__(self, device_ids):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world_size > 1
        if torch.cuda.is_available():
            index = self.local_rank if self.enabled else device_ids[0]
            self.device = torch.device("cuda", index)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        if self.enabled:
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.main = self.rank == 0

    def close(self):
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def resolve_data(args, log):
    """The train and test split folders: the given ones, or the built-in scenes rendered once."""
    if args.train_data_dir is not None:
        test_dir = args.test_data_dir or args.train_data_dir
        return args.train_data_dir, test_dir
    from dataset.shepard_metzler import ensure_builtin_dataset
    root = os.path.join(args.data_root, f"shepard_metzler_{args.builtin_parts}_parts")
    log(f"no --train_data_dir: using built-in Shepard-Metzler scenes in {root} (rendered once)")
    train_dir, test_dir = ensure_builtin_dataset(
        root, parts=args.builtin_parts, train_scenes=args.builtin_train_scenes,
        test_scenes=args.builtin_test_scenes, seed=0, workers=max(1, min(2, os.cpu_count() or 1)))
    return train_dir, (args.test_data_dir or test_dir)


def train(args):
    dist = Distributed(args.device_ids)
    log = print if dist.main else (lambda *a, **k: None)
    if args.batch_size % dist.world_size:
        raise UsageError(f"--batch_size {args.batch_size} does not divide over {dist.world_size} processes; "
                         f"use a multiple of {dist.world_size}")
    run_dir = os.path.join(args.root_log_dir, args.log_dir)
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    # resume: the checkpoint decides the model, the step and the seed
    state = None
    if args.resume:
        path = ckpt_io.latest(ckpt_dir) if args.resume == "latest" else args.resume
        if path is None:
            raise UsageError(f"--resume: no checkpoint in {ckpt_dir}; start without --resume or point "
                             f"--root_log_dir/--log_dir at the run to continue")
        state = ckpt_io.load(path)
        ckpt_io.check_compatible(state, model_config(args), args.given, path)
        args.seed = state["args"]["seed"]
        log(f"resuming from {path} at step {state['step']}")
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    torch.manual_seed(args.seed)  # the initial weights

    try:
        max_context = args.max_context or gqn_dataset.context_count_for_dataset(args.dataset)
    except DatasetError as e:
        raise UsageError(str(e)) from None
    train_dir, test_dir = resolve_data(args, log)
    num_views = gqn_dataset.SceneViews(train_dir).num_views
    if max_context >= num_views:  # M context views and a query must be distinct views of a scene
        what = f"--max_context {args.max_context}" if args.max_context else f"--dataset {args.dataset}"
        log(f"{what}: at most {max_context} context views, but scenes have {num_views} "
            f"views; using at most {num_views - 1}")
        max_context = num_views - 1
    if args.min_context > max_context:
        raise UsageError(f"--min_context {args.min_context} is more than the most context views, {max_context}; "
                         f"pass a --min_context of at most {max_context}")
    if dist.main:
        ckpt_io.ensure_writable(run_dir)

    model = GQN(**(state["config"] if state else model_config(args)))
    if args.init == "kaiming" and not state:
        kaiming_init(model.phi)
    model.to(dist.device)
    optimizer = make_optimizer(model, args.mu_i)
    lr_schedule = AnnealingStepLR(optimizer, args.mu_i, args.mu_f, args.mu_n)
    sigma_schedule = SigmaSchedule(args.sigma_i, args.sigma_f, args.sigma_n)
    beta_schedule = KLWeightSchedule(args.beta_i, args.beta_f, args.beta_n)
    step = 0
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["lr_schedule"])
        sigma_schedule.load_state_dict(state["sigma_schedule"])
        if "beta_schedule" in state:  # checkpoints from before the KL weight had beta = 1
            beta_schedule.load_state_dict(state["beta_schedule"])
        step = state["step"]
    if dist.enabled:  # every process draws the global batch's noise and keeps its own rows
        share = args.batch_size // dist.world_size
        model.noise_rows = (dist.rank * share, (dist.rank + 1) * share, args.batch_size)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"GQN {model.config}: {n_params:,} parameters on {dist.device}, dtype {args.dtype}")
    if args.dtype == "bfloat16" and dist.device.type == "cpu" and model.h_dim < 128:
        log(f"note: on a CPU, bfloat16 pays only for wide convs; with --h_dim {model.h_dim} it can be many times "
            f"slower than float32 (README, 'Speed')")

    net = model
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
            find_unused_parameters=model.config["representation"] == "tower")
    elif dist.device.type == "cuda" and len(args.device_ids) > 1:
        net = nn.DataParallel(model, device_ids=args.device_ids)
    if args.compile:
        net = torch.compile(net)

    pin = dist.device.type == "cuda"
    if args.workers is None:  # enough that a GPU never waits; on a CPU the workers would take its cores
        per_process = (os.cpu_count() or 2) // max(1, torch.cuda.device_count() if pin else 1)
        args.workers = max(1, min(8, per_process)) if pin else 1
    train_loader = gqn_dataset.make_loader(
        train_dir, args.batch_size, max_context, args.seed, args.workers, start_batch=step,
        rank=dist.rank, world_size=dist.world_size, pin_memory=pin, skip_bad_scenes=args.skip_bad_scenes,
        min_context=args.min_context)
    test_batch = None
    writer = None
    if dist.main:
        from tensorboardX import SummaryWriter
        writer = SummaryWriter(run_dir)
        test_batch = evaluate.fixed_batch(test_dir, min(args.batch_size, 16), args.test_context, seed=args.seed)
        with open(os.path.join(run_dir, "args.json"), "w") as f:
            json.dump({k: v for k, v in vars(args).items()}, f, indent=2, default=str)

    stop = StopFlag()
    skipped = bad_scenes = 0
    metrics = open(os.path.join(run_dir, "metrics.jsonl"), "a") if dist.main else None
    t_start = time.time()
    from tqdm import tqdm
    bar = tqdm(total=args.gradient_steps, initial=step, disable=not dist.main, dynamic_ncols=True)
    batches = iter(train_loader)
    last_time, last_step = time.time(), step
    try:
        while step < args.gradient_steps and not stop.requested:
            frames, viewpoints, bad = next_batch(batches)
            if bad:
                bad_scenes += bad
                if writer:
                    writer.add_scalar("train/skipped_bad_scenes", bad_scenes, step + 1)
            sigma, lr, beta = sigma_schedule.sigma, optimizer.param_groups[0]["lr"], beta_schedule.beta
            # The random state of a step is a function of (seed, step): the data order already is
            # (see ContextBatchSampler), and so is the noise, which makes --resume exact.
            torch.manual_seed(step_seed(args.seed, step))
            net.train()
            try:
                values = None if frames is None else train_step(
                    net, optimizer, frames, viewpoints, sigma, dist.device, args.dtype, args.skip_nonfinite, beta)
            except NonFiniteLoss as e:
                raise TrainingError(f"step {step + 1}: {e}; the last good checkpoint in {ckpt_dir} is kept "
                                    f"(resume with --resume, perhaps with a lower --mu_i, or pass "
                                    f"--skip_nonfinite to skip such steps)") from None
            step += 1
            lr_schedule.step()
            sigma_schedule.step()
            beta_schedule.step()
            if values is None:
                skipped += 1
                if writer:
                    writer.add_scalar("train/skipped_nonfinite_steps", skipped, step)
                continue
            loss, kl, nll = values
            if dist.main:
                now = time.time()
                bar.update(1)
                if now - last_time > 1 or step == args.gradient_steps:
                    rate = (step - last_step) / (now - last_time)
                    last_time, last_step = now, step
                    bar.set_postfix_str(f"loss {loss:.1f} kl {kl:.1f} sigma {sigma:.3f} lr {lr:.2e} {rate:.2f} steps/s")
                log_train(writer, step, loss, kl, nll, sigma, lr, beta, frames.shape[-3:])
                metrics.write(json.dumps(dict(step=step, loss=loss, kl=kl, nll=nll, sigma=sigma, lr=lr, beta=beta,
                                              seconds=round(now - t_start, 3))) + "\n")
                metrics.flush()
                if step % args.log_interval == 0 or step == args.gradient_steps:
                    scalars = log_test(writer, model, test_batch, step, sigma, dist.device, args.dtype)
                    with open(os.path.join(run_dir, "test_metrics.jsonl"), "a") as f:
                        f.write(json.dumps(dict(step=step, seconds=round(time.time() - t_start, 3), **scalars)) + "\n")
            if step % args.save_interval == 0 and step < args.gradient_steps:
                save(ckpt_dir, args, model, optimizer, lr_schedule, sigma_schedule, beta_schedule, step, dist)
        path = save(ckpt_dir, args, model, optimizer, lr_schedule, sigma_schedule, beta_schedule, step, dist) if step else None
        if dist.main and step > 0:
            if stop.requested:
                bar.close()
                log(f"stopped by {stop.requested} at step {step}; saved {path}; continue with --resume")
            elif args.eval_scenes:
                bar.close()
                log(f"trained {step} steps in {time.time() - t_start:.0f} s; evaluating {args.eval_scenes} held-out scenes")
                evaluate.final_report(model, test_dir, run_dir, args.eval_scenes, args.test_context,
                                      args.seed, dist.device, sigma_schedule.sigma, log, args.dtype)
    finally:
        bar.close()
        if writer:
            writer.close()
        if metrics:
            metrics.close()
        stop.restore()
        dist.close()
    return step


def save(ckpt_dir, args, model, optimizer, lr_schedule, sigma_schedule, beta_schedule, step, dist):
    """Every process calls this at the same steps; rank 0 writes the checkpoint. Under DDP the ranks'
    parameters are compared first (a checksum each), and a divergence stops the run."""
    if dist.enabled:
        checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
        sums = [torch.zeros_like(checksum) for _ in range(dist.world_size)]
        torch.distributed.all_gather(sums, checksum.to(dist.device) if dist.device.type == "cuda" else checksum)
        if len({s.item() for s in sums}) != 1:
            raise TrainingError(f"step {step}: the processes' parameters differ ({[s.item() for s in sums]}); "
                                f"resume from the last checkpoint in {ckpt_dir}")
    if not dist.main:
        return None
    return ckpt_io.save(ckpt_dir, step, keep=args.keep, model=model.state_dict(), config=model.config,
                        world_size=dist.world_size,
                        optimizer=optimizer.state_dict(), lr_schedule=lr_schedule.state_dict(),
                        sigma_schedule=sigma_schedule.state_dict(), beta_schedule=beta_schedule.state_dict(),
                        args={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, list, type(None)))})


def next_batch(batches):
    """The next (frames, viewpoints, skipped) from the loader; a bad scene's error, which the DataLoader
    wraps in a worker traceback, comes out as its own one-sentence message."""
    try:
        return next(batches)
    except DatasetError as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        message = lines[-1].split("DatasetError: ", 1)[-1] if len(lines) > 1 else str(e)
        raise DatasetError(f"{message} (or pass --skip_bad_scenes to leave such scenes out, counted in the logs)") from None


def log_train(writer, step, loss, kl, nll, sigma, lr, beta, image_shape):
    writer.add_scalar("train/neg_elbo", loss, step)
    writer.add_scalar("train/kl", kl, step)
    writer.add_scalar("train/nll", nll, step)
    writer.add_scalar("train/bits_per_dim", bits_per_dim(loss, image_shape), step)
    writer.add_scalar("train/sigma", sigma, step)
    writer.add_scalar("train/lr", lr, step)
    writer.add_scalar("train/beta", beta, step)


@torch.no_grad()
def log_test(writer, model, batch, step, sigma, device, dtype):
    """Test -ELBO, KL, NLL, bits per dim, and the MSE, object IoU, object colour error and NLL above its
    floor of generations and reconstructions, to TensorBoard with image grids, from
    evaluate.evaluate_batch (one ELBO pass plus one generation); returns the scalars by name."""
    from images import make_grid
    model.eval()
    frames, viewpoints = batch
    x, v, x_q, v_q = split_batch(frames, viewpoints, device)
    metrics, images = evaluate.evaluate_batch(model, x, v, x_q, v_q, sigma, dtype)
    names = ["neg_elbo", "kl", "nll", "bits_per_dim"] + [
        f"{name}_{method}" for method in ("generation", "reconstruction", "mean_context")
        for name in ("mse", "iou", "colour_error", "nll_above_floor")]
    scalars = {name: metrics[name].mean().item() for name in names}
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


class UsageError(Exception):
    """A mistake in the command line, said in one sentence."""


class TrainingError(Exception):
    """Training cannot go on; the message says why and what to do."""


def main(argv=None):
    args = parse_args(argv)
    keep_freed_memory()
    try:
        train(args)
    except (UsageError, TrainingError, DatasetError, ckpt_io.CheckpointError, RenderError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
