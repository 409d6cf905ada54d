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
TensorBoard events, checkpoints/ckpt-<step>.pt (model, optimizer, schedules, step, config), metrics.jsonl
and test_metrics.jsonl, and, at the end, final.png and final.json (held-out scenes against three baselines).
The flags, presets and defaults are in options.py (`--help` lists them); the step, saving and logging in engine.py.
"""

import os
import sys

import torch
from torch import nn

import checkpoint as ckpt_io
import gqn_dataset
import metrics
from dataset.errors import DatasetError
from dataset.builtin import RenderError
from distributed import BFloat16Replica, Distributed
from engine import NonFiniteLoss, StopFlag, TrainingError, make_optimizer, save_checkpoint, train_step
from model import GQN
from options import MACHINE_FLAGS, MODEL_FLAGS, PRESETS, model_config, parse_args, resumed_args  # noqa: F401  (train.parse_args, train.PRESETS: the CLI's)
from runlog import RunLog
from runtime import UsageError, keep_freed_memory, noise_seed
from scheduler import AnnealingStepLR, KLWeightSchedule, SigmaSchedule, linear_anneal


def train(args):
    """Algorithm S1: set-up, the loop, the end. Returns the number of steps trained."""
    # -- set-up: processes, the run's folder, a checkpoint to resume, data, model, optimizer, schedules
    dist = Distributed(args.device_ids)
    log = print if dist.main else (lambda *a, **k: None)
    run_dir = resumed_run_dir(args) or os.path.join(args.root_log_dir, args.log_dir)
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    if args.init_from and args.resume:
        raise UsageError("--init_from starts a new run from a checkpoint's weights and --resume continues a run: "
                         "give one of them")
    state = resume_state(args, ckpt_dir, log)
    init = ckpt_io.load(args.init_from) if args.init_from else None   # before the data: a wrong path fails at once
    if args.seed is None:  # drawn once, by process 0: every process's data order and noise follow it
        args.seed = dist.shared(int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF)
    if args.batch_size % dist.world_size:
        raise UsageError(f"--batch_size {args.batch_size} does not divide over {dist.world_size} processes; "
                         f"use a multiple of {dist.world_size}")
    torch.manual_seed(args.seed)  # the initial weights
    train_dir, test_dir, max_context = resolve_data(args, log)
    if dist.main:
        ckpt_io.ensure_writable(run_dir)
    model, net = build_model(args, state, dist, log, init)
    optimizer = make_optimizer(model, args.mu_i)
    schedules = dict(lr_schedule=AnnealingStepLR(optimizer, args.mu_i, args.mu_f, args.mu_n),
                     sigma_schedule=SigmaSchedule(args.sigma_i, args.sigma_f, args.sigma_n),
                     beta_schedule=KLWeightSchedule(args.beta_i, args.beta_f, args.beta_n))
    step = restore(state, optimizer, schedules, args)
    lr_schedule, sigma_schedule, beta_schedule = schedules.values()
    if args.workers is None:  # enough that a GPU never waits; on a CPU the workers would take its cores
        gpus = torch.cuda.device_count() if dist.device.type == "cuda" else 0
        args.workers = max(1, min(8, (os.cpu_count() or 2) // max(1, gpus))) if gpus else 1
    batches = iter(gqn_dataset.make_loader(
        train_dir, args.batch_size, max_context, args.seed, args.workers, start_batch=step, rank=dist.rank,
        world_size=dist.world_size, pin_memory=dist.device.type == "cuda", min_context=args.min_context))
    test_batch = None
    if dist.main:
        test_batch = metrics.fixed_batch(test_dir, min(args.batch_size, 16), args.test_context, args.seed)
        write_args(run_dir, args)
    run_log = RunLog(run_dir, args.gradient_steps, step, dist.main)
    stop = StopFlag()
    skipped = bad_scenes = 0

    def checkpoint_now():
        return save_checkpoint(ckpt_dir, step, model, optimizer, schedules, dist, args.keep, vars(args))

    try:
        # -- the loop: a batch, a step of the -ELBO's gradient, the schedules, logs, checkpoints
        while step < args.gradient_steps:
            frames, viewpoints, bad = next(batches)
            # decided by all processes together: a signal may reach one process (one node) only, and a
            # process whose part of the batch failed its checks makes every process skip the step
            stop_now, batchless = dist.any(stop.requested, frames is None)
            if stop_now:
                stop.requested = stop.requested or "a signal to another process"
                break
            if bad:                                              # scenes that failed their checks
                if not args.skip_bad_scenes:
                    raise DatasetError(f"{bad.messages[0]} (or pass --skip_bad_scenes to leave such scenes "
                                       f"out, counted in the logs)")
                bad_scenes += bad
                run_log.count("skipped_bad_scenes", bad_scenes, step + 1)
            sigma, lr, beta = sigma_schedule.sigma, optimizer.param_groups[0]["lr"], beta_schedule.beta
            torch.manual_seed(noise_seed(args.seed, step))       # the noise: a function of (seed, step)
            net.train()
            try:
                values = None if batchless else train_step(
                    net, optimizer, frames, viewpoints, sigma, dist.device, args.dtype, args.skip_nonfinite,
                    beta, noise=dist.batch_noise(args.batch_size))  # this process's rows of the batch's noise
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
            if step % args.log_interval == 0 or step == args.gradient_steps:
                run_log.test(model, test_batch, step, sigma, dist.device, args.dtype)
            if step % args.save_interval == 0 and step < args.gradient_steps:
                checkpoint_now()

        # -- the end: a last checkpoint, and the held-out evaluation unless stopped early
        path = checkpoint_now() if step else None
        run_log.close()
        if bad_scenes:
            log(f"left out {bad_scenes} scenes that failed their checks (--skip_bad_scenes; train/skipped_bad_scenes)")
        if dist.main and step > 0:
            if stop.requested:
                log(f"stopped by {stop.requested} at step {step}; saved {path}; continue with --resume")
            elif args.eval_scenes:
                log(f"trained {step} steps in {run_log.seconds():.0f} s; evaluating {args.eval_scenes} held-out scenes")
                metrics.final_report(model, test_dir, run_dir, args.eval_scenes, args.test_context,
                                      args.seed, dist.device, sigma_schedule.sigma, log, args.dtype)
    finally:
        run_log.close()
        stop.restore()
        dist.close()
    return step


def resumed_run_dir(args):
    """With `--resume FILE` and neither --root_log_dir nor --log_dir: the run folder FILE belongs to
    (.../<run>/checkpoints/FILE), so the run goes on there and not in the default runs/GQN; sets
    args.root_log_dir and args.log_dir to it. None otherwise."""
    if args.resume in (None, "latest") or {"root_log_dir", "log_dir"} & set(args.given):
        return None
    folder = os.path.dirname(os.path.abspath(args.resume))
    if os.path.basename(folder) != "checkpoints":
        raise UsageError(f"--resume {args.resume} is not in a run's checkpoints/ folder; say where the "
                         f"continued run goes with --root_log_dir and --log_dir")
    run_dir = os.path.dirname(folder)
    args.root_log_dir, args.log_dir = os.path.dirname(run_dir), os.path.basename(run_dir)
    return run_dir


def resume_state(args, ckpt_dir, log):
    """With --resume, the checkpoint to continue: it decides the model, the step and the seed, and the
    flags not given now are its run's (options.resumed_args). Either way, a checkpoint in the folder
    later than the step the run starts from (0 for a new run) is refused before anything is written:
    saving among them, --keep would delete one run's files and --resume would later pick either."""
    newest = ckpt_io.latest(ckpt_dir)
    state = None
    if not args.resume:
        if newest:
            raise UsageError(f"{ckpt_dir} holds the checkpoints of an earlier run (newest {os.path.basename(newest)}); "
                             f"continue it with --resume, or start this run in another --log_dir (or delete that folder)")
    else:
        path = newest if args.resume == "latest" else args.resume
        if path is None:
            raise UsageError(f"--resume: no checkpoint in {ckpt_dir}; start without --resume or point "
                             f"--root_log_dir/--log_dir at the run to continue")
        state = ckpt_io.load(path)
        if newest and ckpt_io.step_of(newest) > state["step"]:
            raise UsageError(f"--resume: {ckpt_dir} already holds a later checkpoint ({os.path.basename(newest)}) "
                             f"than step {state['step']}, which continuing there would overwrite; resume the newest "
                             f"with --resume alone, or branch from this one into a new --log_dir")
        if "optimizer" not in state:
            raise UsageError(f"--resume: {path} is an exported checkpoint (weights, no optimizer state), which "
                             f"cannot be continued exactly; resume from a file in a run's checkpoints/ folder")
        check_model_flags(state["config"], model_config(args), args.given, path)
        saved = state.get("args", {})
        if "seed" in args.given and args.seed != saved.get("seed"):
            raise UsageError(f"--resume: --seed {args.seed} differs from the checkpoint's run's seed "
                             f"{saved.get('seed')}, which a resumed run keeps (its data order and noise follow it); "
                             f"drop --seed")
        changed = [f"--{k} {getattr(args, k)} (was {saved[k]})" for k in args.given
                   if k in saved and k not in MACHINE_FLAGS and saved[k] != getattr(args, k)]
        vars(args).update(vars(resumed_args(args, saved, state["config"])))
        log(f"resuming from {path} at step {state['step']}, with its run's flags"
            + (f" except {', '.join(changed)}" if changed else ""))
    return state


def check_model_flags(config, flags_config, given, path):
    """Refuse to resume when a model flag given now differs from the checkpoint's model configuration."""
    differ = [f"--{flag} {flags_config[k]} (checkpoint: {config.get(k)})"
              for k, flag in MODEL_FLAGS.items() if flag in given and config.get(k) != flags_config[k]]
    if differ:
        raise ckpt_io.CheckpointError(f"{path} was trained with another model configuration: {', '.join(differ)}; "
                                      f"drop those flags to resume it, or start a new run with another --log_dir")


def resolve_data(args, log):
    """The train and test split folders (the given ones, or the built-in scenes, rendered once) and the
    most context views per batch."""
    try:
        max_context = args.max_context or gqn_dataset.context_count_for_dataset(args.dataset)
    except DatasetError as e:
        raise UsageError(str(e)) from None
    if args.train_data_dir is not None:
        train_dir, test_dir = args.train_data_dir, args.test_data_dir
    else:
        root = gqn_dataset.builtin_root(args.builtin, args.data_root, args.builtin_parts)
        what = "rooms" if args.builtin == "rooms" else "Shepard-Metzler scenes"
        log(f"no --train_data_dir: using built-in {what} in {root} (rendered once)")
        train_dir, test_dir = gqn_dataset.ensure_builtin(args.builtin, root, args.builtin_train_scenes,
                                                         args.builtin_test_scenes, args.builtin_parts)
        test_dir = args.test_data_dir or test_dir
    num_views = gqn_dataset.SceneViews(train_dir).num_views
    if test_dir is None:  # the test metrics and the final evaluation would score training scenes
        raise UsageError(f"--train_data_dir {train_dir} needs a --test_data_dir too: the held-out split the test "
                         f"metrics and the final evaluation use (for DeepMind's data, the converted test folder)")
    if max_context >= num_views:  # M context views and a query must be distinct views of a scene
        what = f"--max_context {args.max_context}" if args.max_context else f"--dataset {args.dataset}"
        log(f"{what}: at most {max_context} context views, but scenes have {num_views} "
            f"views; using at most {num_views - 1}")
        max_context = num_views - 1
    if args.min_context > max_context:
        raise UsageError(f"--min_context {args.min_context} is more than the most context views, {max_context}; "
                         f"pass a --min_context of at most {max_context}")
    return train_dir, test_dir, max_context


def build_model(args, state, dist, log, init=None):
    """The GQN (the checkpoint's configuration when resuming; with --init_from, the weights of the checkpoint
    `init`) on this process's device, and what the loop calls: the model itself, or its
    DistributedDataParallel / DataParallel / compiled wrapper."""
    try:
        model = GQN(**(state["config"] if state else model_config(args)))
    except ValueError as e:  # a combination of model flags that does not make a model
        *flags, last = (f"--{flag}" for flag in ("representation", "r_dim", "observation"))
        raise UsageError(f"{e}; change {', '.join(flags)} or {last}") from None
    if init is not None:
        new = ckpt_io.load_weights(model, init, args.init_from)
        log(f"weights from {args.init_from}" + (f"; at their initial values: {', '.join(new)}" if new else ""))
    model.to(dist.device)
    if state:
        model.load_state_dict(state["model"])
    n_params = sum(p.numel() for p in model.parameters())
    log(f"GQN {model.config}: {n_params:,} parameters on {dist.device}, dtype {args.dtype}")
    if args.dtype == "bfloat16" and dist.device.type == "cpu" and model.h_dim < 64:
        log(f"note: on a CPU, bfloat16 pays only for wide convs (64 hidden channels or more, on a CPU with "
            f"avx512_bf16); with --h_dim {model.h_dim} it can be many times slower than float32 (benchmarks/README.md)")
    net = model
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
            find_unused_parameters=model.unused_parameters)
    elif dist.device.type == "cuda" and len(args.device_ids) > 1:
        replica = BFloat16Replica(model, "cuda") if args.dtype == "bfloat16" else model
        net = nn.DataParallel(replica, device_ids=args.device_ids)
    if args.compile:
        net = torch.compile(net)
    return model, net


# The flags of each schedule's initial value, final value and length, and the schedule's own names for them.
SCHEDULE_FLAGS = dict(lr_schedule=("mu_i", "mu_f", "mu_n"), sigma_schedule=("sigma_i", "sigma_f", "sigma_n"),
                      beta_schedule=("beta_i", "beta_f", "beta_n"))


def restore(state, optimizer, schedules, args):
    """Load the optimizer's and the schedules' state from a checkpoint; the step to start from (0: none).
    A schedule's flag given now (--mu_f, --sigma_n, ...) changes the rest of that schedule from the step
    reached; the others keep the checkpoint's values, which args then records."""
    if not state:
        return 0
    optimizer.load_state_dict(state["optimizer"])
    for name, schedule in schedules.items():
        if name in state:
            schedule.load_state_dict(state[name])
        else:  # a checkpoint from before the KL weight (beta 1 throughout): its schedule at the step reached
            schedule.t = state["step"]
        flags = SCHEDULE_FLAGS[name]
        for flag, attr in zip(flags, (*flags[:2], "n")):
            if flag in args.given:
                setattr(schedule, attr, getattr(args, flag))
            else:
                setattr(args, flag, getattr(schedule, attr))
    lr = schedules["lr_schedule"]
    if any(flag in args.given for flag in SCHEDULE_FLAGS["lr_schedule"]):
        for group in optimizer.param_groups:  # the changed schedule's rate at the step reached
            group["lr"] = linear_anneal(lr.last_epoch, lr.mu_i, lr.mu_f, lr.n)
        lr._last_lr = [group["lr"] for group in optimizer.param_groups]
    return state["step"]


def write_args(run_dir, args):
    import json
    with open(os.path.join(run_dir, "args.json"), "w") as f:
        json.dump(vars(args), f, indent=2, default=str)


def main(argv=None):
    args = parse_args(argv)
    keep_freed_memory()
    try:
        train(args)
    except (UsageError, TrainingError, DatasetError, ckpt_io.CheckpointError, RenderError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
