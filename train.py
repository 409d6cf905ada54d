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

Algorithm S1 of the paper (supplementary), as train() runs it:
    for t = 1 .. gradient_steps:
        draw a batch of B scenes; per batch M ~ Uniform{min_context .. K} context views (x, v) and a
            query view (x_q, v_q) distinct from them (gqn_dataset.ContextBatchSampler)
        the pixel sigma_t and learning rate mu_t annealed linearly (scheduler.py)
        -ELBO = NLL(x_q | sigma_t) + KL(q || pi), Algorithm S2 (model.GQN.elbo_terms), averaged over B
        one Adam step on its gradient (engine.train_step)
    with the test metrics every --log_interval steps, a checkpoint every --save_interval, and at the end
    generations (Algorithm S3, model.GQN.generate) of held-out scenes scored against three baselines.

Watch it with `tensorboard --logdir runs` (pip install tensorboard). Everything a run writes goes to
<root_log_dir>/<log_dir>: TensorBoard events, checkpoints/ckpt-<step>.pt (model, optimizer, schedules,
step, config), metrics.jsonl and test_metrics.jsonl, args.json, and, at the end, final.png and final.json.
The flags, presets and defaults are in options.py (`--help` lists them in groups); a run's configuration,
resumed or new, in resume.py; the step and saving in engine.py; the processes in distributed.py; the logs
in runlog.py.
"""

import json
import os
import sys

import torch
from torch import nn

import checkpoint as ckpt_io
import gqn_dataset
import metrics
import resume
from atomic_file import AtomicFile
from dataset.errors import DatasetError
from dataset.builtin import RenderError
from distributed import BFloat16Replica, Distributed
from engine import NonFiniteLoss, StopFlag, TrainingError, make_optimizer, save_checkpoint, train_step
from model import GQN
from options import PRESETS, model_config, parse_args  # noqa: F401  (train.parse_args, train.PRESETS)
from runlog import RunLog
from runtime import UsageError, flush_denormals, keep_freed_memory, noise_seed
from scheduler import AnnealingStepLR, KLWeightSchedule, SigmaSchedule


def train(args):
    """Algorithm S1: set-up, the loop, the end. Returns the number of steps trained."""
    # -- set-up: processes, the run's folder, a checkpoint to resume, data, model, optimizer, schedules
    dist = Distributed(args.device_ids)
    log = print if dist.main else (lambda *a, **k: None)
    gpus = torch.cuda.device_count() if dist.device.type == "cuda" else 0
    run, state = resume.configure(args, dist.shared, log, gpus)
    run_dir = os.path.join(run.root_log_dir, run.log_dir)
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    init = ckpt_io.load(run.init_from) if run.init_from else None   # before the data: a wrong path fails now
    if run.batch_size % dist.world_size:
        raise UsageError(f"--batch_size {run.batch_size} does not divide over {dist.world_size} processes; "
                         f"use a multiple of {dist.world_size}")
    torch.manual_seed(run.seed)  # the initial weights
    train_dir, test_dir, max_context = resolve_data(run, log)
    if dist.main:
        ckpt_io.ensure_writable(run_dir)
    model, net = build_model(run, state, dist, log, init)
    optimizer = make_optimizer(model, run.mu_i)
    schedules = dict(lr_schedule=AnnealingStepLR(optimizer, run.mu_i, run.mu_f, run.mu_n),
                     sigma_schedule=SigmaSchedule(run.sigma_i, run.sigma_f, run.sigma_n),
                     beta_schedule=KLWeightSchedule(run.beta_i, run.beta_f, run.beta_n))
    step = resume.restore(state, optimizer, schedules, run)
    lr_schedule, sigma_schedule, beta_schedule = schedules.values()
    batches = iter(gqn_dataset.make_loader(
        train_dir, run.batch_size, max_context, run.seed, run.workers, start_batch=step, rank=dist.rank,
        world_size=dist.world_size, pin_memory=dist.device.type == "cuda", min_context=run.min_context))
    test_batch = None
    if dist.main:
        test_batch = metrics.fixed_batch(test_dir, min(run.batch_size, 16), run.test_context, run.seed)
        write_args(run_dir, run)
    run_log = RunLog(run_dir, run.gradient_steps, step, dist.main)
    stop = StopFlag()
    skipped = bad_scenes = 0

    def checkpoint_now():
        return save_checkpoint(ckpt_dir, step, model, optimizer, schedules, dist, run.keep, vars(run))

    try:
        # -- the loop: a batch, a step of the -ELBO's gradient, the schedules, logs, checkpoints
        while step < run.gradient_steps:
            frames, viewpoints, bad = next(batches)
            # decided by all processes together: a signal may reach one process (one node) only, and a
            # process whose part of the batch failed its checks makes every process skip the step
            stop_now, batchless = dist.any(stop.requested, frames is None)
            if stop_now:
                stop.requested = stop.requested or "a signal to another process"
                break
            if bad:                                              # scenes that failed their checks
                if not run.skip_bad_scenes:
                    raise DatasetError(f"{bad.messages[0]} (or pass --skip_bad_scenes to leave such scenes "
                                       f"out, counted in the logs)")
                bad_scenes += bad
                run_log.count("skipped_bad_scenes", bad_scenes, step + 1)
            sigma, lr, beta = sigma_schedule.sigma, optimizer.param_groups[0]["lr"], beta_schedule.beta
            torch.manual_seed(noise_seed(run.seed, step))       # the noise: a function of (seed, step)
            net.train()
            try:
                values = None if batchless else train_step(
                    net, optimizer, frames, viewpoints, sigma, dist.device, run.dtype, run.skip_nonfinite,
                    beta, noise=dist.batch_noise(run.batch_size))  # this process's rows of the batch's noise
            except NonFiniteLoss as e:
                raise TrainingError(f"step {step + 1}: {e}; the last good checkpoint in {ckpt_dir} is kept "
                                    f"(resume with --resume, perhaps with a lower --mu_i, or pass "
                                    f"--skip_nonfinite to skip such steps)") from None
            step += 1
            for schedule in schedules.values():
                schedule.step()
            if values is not None:
                run_log.step(step, *values, sigma, lr, beta, frames.shape[-3:])
            elif not batchless:                                  # a non-finite loss or gradient, skipped
                skipped += 1
                run_log.count("skipped_nonfinite_steps", skipped, step)
            if step % run.log_interval == 0 or step == run.gradient_steps:
                run_log.test(model, test_batch, step, sigma, dist.device, run.dtype)
            if step % run.save_interval == 0 and step < run.gradient_steps:
                checkpoint_now()

        # -- the end: a last checkpoint, and the held-out evaluation unless stopped early
        path = checkpoint_now() if step else None
        run_log.close()
        if bad_scenes:
            log(f"left out {bad_scenes} scenes that failed their checks (--skip_bad_scenes; "
                f"train/skipped_bad_scenes)")
        if dist.main and step > 0:
            if stop.requested:
                log(f"stopped by {stop.requested} at step {step}; saved {path}; continue with --resume")
            elif run.eval_scenes:
                log(f"trained {step} steps in {run_log.seconds():.0f} s; evaluating {run.eval_scenes} "
                    f"held-out scenes")
                metrics.final_report(model, test_dir, run_dir, run.eval_scenes, run.test_context,
                                      run.seed, dist.device, sigma_schedule.sigma, log, run.dtype)
    finally:
        run_log.close()
        stop.restore()
        dist.close()
    return step


def resolve_data(run, log):
    """The train and test split folders (the given ones, or the built-in scenes, rendered once) and the
    most context views per batch."""
    try:
        max_context = run.max_context or gqn_dataset.context_count_for_dataset(run.dataset)
    except DatasetError as e:
        raise UsageError(str(e)) from None
    if run.train_data_dir is not None:
        train_dir, test_dir = run.train_data_dir, run.test_data_dir
    else:
        root = gqn_dataset.builtin_root(run.builtin, run.data_root, run.builtin_parts)
        log(f"no --train_data_dir: using the built-in {run.builtin} scenes in {root} (rendered once)")
        train_dir, test_dir = gqn_dataset.ensure_builtin(run.builtin, root, run.builtin_train_scenes,
                                                         run.builtin_test_scenes, run.builtin_parts)
        test_dir = run.test_data_dir or test_dir
    num_views = gqn_dataset.SceneViews(train_dir).num_views
    if test_dir is None:  # the test metrics and the final evaluation would score training scenes
        raise UsageError(f"--train_data_dir {train_dir} needs a --test_data_dir too: the held-out split "
                         f"the test metrics and the final evaluation use (for DeepMind's data, the converted "
                         f"test folder)")
    if max_context >= num_views:  # M context views and a query must be distinct views of a scene
        what = f"--max_context {run.max_context}" if run.max_context else f"--dataset {run.dataset}"
        log(f"{what}: at most {max_context} context views, but scenes have {num_views} "
            f"views; using at most {num_views - 1}")
        max_context = num_views - 1
    if run.min_context > max_context:
        raise UsageError(f"--min_context {run.min_context} is more than the most context views, "
                         f"{max_context}; pass a --min_context of at most {max_context}")
    return train_dir, test_dir, max_context


def build_model(run, state, dist, log, init=None):
    """The GQN (the checkpoint's configuration when resuming; with --init_from, the weights of the checkpoint
    `init`) on this process's device, and what the loop calls: the model itself, or its
    DistributedDataParallel / DataParallel / compiled wrapper."""
    try:
        model = GQN(**(state["config"] if state else model_config(run)))
    except ValueError as e:  # a combination of model flags that does not make a model
        *flags, last = (f"--{flag}" for flag in ("representation", "r_dim", "observation"))
        raise UsageError(f"{e}; change {', '.join(flags)} or {last}") from None
    if init is not None:
        new = ckpt_io.load_weights(model, init, run.init_from)
        log(f"weights from {run.init_from}"
            + (f"; at their initial values: {', '.join(new)}" if new else ""))
    model.to(dist.device)
    if state:
        model.load_state_dict(state["model"])
    n_params = sum(p.numel() for p in model.parameters())
    log(f"GQN {model.config}: {n_params:,} parameters on {dist.device}, dtype {run.dtype}")
    if run.dtype == "bfloat16" and dist.device.type == "cpu" and model.h_dim < 64:
        log(f"note: on a CPU, bfloat16 pays only for wide convs (64 hidden channels or more, on a CPU with "
            f"avx512_bf16); with --h_dim {model.h_dim} it can be many times slower than float32 "
            f"(benchmarks/README.md)")
    net = model
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
            find_unused_parameters=model.unused_parameters)
    elif dist.data_parallel:
        replica = BFloat16Replica(model, "cuda") if run.dtype == "bfloat16" else model
        net = nn.DataParallel(replica, device_ids=run.device_ids)
    if run.compile:
        net = torch.compile(net)
    return model, net


def write_args(run_dir, run):
    """The run's flags, as it goes on, to <run>/args.json."""
    with AtomicFile(os.path.join(run_dir, "args.json")) as f:
        f.write(json.dumps(vars(run), indent=2, default=str).encode())


def main(argv=None):
    args = parse_args(argv)
    keep_freed_memory()
    flush_denormals()
    try:
        train(args)
    except (UsageError, TrainingError, DatasetError, ckpt_io.CheckpointError, RenderError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
