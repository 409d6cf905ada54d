"""A run's configuration from its command line, and from its checkpoint when it is continued (--resume).

    run, state = resume.configure(args, shared=dist.shared, log=print)

`args` (options.parse_args) is never changed: `run` is a new namespace holding every flag of this run
as it goes on. Without --resume it is args with the run's folder, the kind of data (--dataset, which
sets K: the built-in scenes' own unless given), its seed (drawn once, by process 0, when not given) and
its worker count filled in. With --resume the checkpoint decides the model, the
step, the seed and every flag not given now (its run's flags, options.DEFAULTS where that run predates a
flag; the machine's flags, options.MACHINE_FLAGS, come from today's command line), so
`python train.py --resume` goes on with the run as it was started, whatever the presets say today.
A schedule's flag given now (--mu_f, --sigma_n, ...) changes the rest of that schedule from the step
reached (restore). `state` is the checkpoint's dict, or None for a new run.
"""

import argparse
import os

import checkpoint
from gqn_dataset import BUILTIN_DATASETS, BUILTIN_SCENES
from options import DEFAULTS, MACHINE_FLAGS, MODEL_FLAGS, model_config
from runtime import UsageError
from scheduler import linear_anneal

# Each schedule's flags (initial value, final value, length) and the schedule's own names for them.
SCHEDULE_FLAGS = dict(lr_schedule=(("mu_i", "mu_i"), ("mu_f", "mu_f"), ("mu_n", "n")),
                      sigma_schedule=(("sigma_i", "sigma_i"), ("sigma_f", "sigma_f"), ("sigma_n", "n")),
                      beta_schedule=(("beta_i", "beta_i"), ("beta_f", "beta_f"), ("beta_n", "n")))


def configure(args, shared=lambda value: value, log=print, gpus=0):
    """(run, state): this run's flags as a new namespace, and the checkpoint it continues (None for a new
    run). shared(value) gives process 0's value on every process (the drawn seed); gpus: the CUDA devices
    this process may feed, for the default worker count."""
    if args.init_from and args.resume:
        raise UsageError("--init_from starts a new run from a checkpoint's weights and --resume continues a "
                         "run: give one of them")
    values = dict(vars(args))
    values.update(run_folder(args))
    ckpt_dir = os.path.join(values["root_log_dir"], values["log_dir"], "checkpoints")
    path, state = checkpoint_to_continue(args, ckpt_dir)
    if state is not None:
        values.update(resumed_flags(args, state, path, log))
    if values["dataset"] is None:  # the kind of data, which sets K: the built-in scenes', else the paper's
        values["dataset"] = BUILTIN_DATASETS[values["builtin"]] if values["train_data_dir"] is None \
            else "Shepard-Metzler"
    for k, split in enumerate(("train", "test")):  # the built-in kind's scene counts unless given
        if values.get(f"builtin_{split}_scenes") is None:
            values[f"builtin_{split}_scenes"] = BUILTIN_SCENES[values["builtin"]][k]
    if values["seed"] is None:  # drawn once, by process 0: every process's data order and noise follow it
        values["seed"] = shared(int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF)
    if values["workers"] is None:  # enough that a GPU never waits; on a CPU the workers would take its cores
        values["workers"] = max(1, min(8, (os.cpu_count() or 2) // gpus)) if gpus else 1
    return argparse.Namespace(**values), state


def run_folder(args):
    """{root_log_dir, log_dir} of the run: as given, except that `--resume FILE` without either flag
    continues the run FILE belongs to (.../<run>/checkpoints/FILE) rather than the default runs/GQN."""
    if args.resume in (None, "latest") or {"root_log_dir", "log_dir"} & set(args.given):
        return {}
    folder = os.path.dirname(os.path.abspath(args.resume))
    if os.path.basename(folder) != "checkpoints":
        raise UsageError(f"--resume {args.resume} is not in a run's checkpoints/ folder; say where the "
                         f"continued run goes with --root_log_dir and --log_dir")
    run_dir = os.path.dirname(folder)
    return dict(root_log_dir=os.path.dirname(run_dir), log_dir=os.path.basename(run_dir))


def checkpoint_to_continue(args, ckpt_dir):
    """(path, state) of the checkpoint --resume names ((None, None) without --resume). Either way, a
    checkpoint in the folder later than the step the run starts from (0 for a new run) is refused before
    anything is written: saving among them, --keep would delete one run's files and --resume would later
    pick either."""
    newest = checkpoint.latest(ckpt_dir)
    if not args.resume:
        if newest:
            raise UsageError(f"{ckpt_dir} holds the checkpoints of an earlier run (newest "
                             f"{os.path.basename(newest)}); continue it with --resume, or start this run in "
                             f"another --log_dir (or delete that folder)")
        return None, None
    path = newest if args.resume == "latest" else args.resume
    if path is None:
        raise UsageError(f"--resume: no checkpoint in {ckpt_dir}; start without --resume or point "
                         f"--root_log_dir/--log_dir at the run to continue")
    state = checkpoint.load(path)
    if newest and checkpoint.step_of(newest) > state["step"]:
        raise UsageError(f"--resume: {ckpt_dir} already holds a later checkpoint "
                         f"({os.path.basename(newest)}) than step {state['step']}, which continuing there "
                         f"would overwrite; resume the newest with --resume alone, or branch from this one "
                         f"into a new --log_dir")
    if "optimizer" not in state:
        raise UsageError(f"--resume: {path} is an exported checkpoint (weights, no optimizer state), which "
                         f"cannot be continued exactly; resume from a file in a run's checkpoints/ folder")
    return path, state


def resumed_flags(args, state, path, log):
    """The flags a continued run takes from its checkpoint: every flag not given now is its run's
    (DEFAULTS where that run predates the flag), except the machine's; the model's are its config, and a
    schedule's are the schedule's as saved. Refuses a model flag or a seed given now that differs."""
    config, saved = state["config"], state.get("args", {})
    check_model_flags(config, model_config(args), args.given, path)
    if "seed" in args.given and args.seed != saved.get("seed"):
        raise UsageError(f"--resume: --seed {args.seed} differs from the checkpoint's run's seed "
                         f"{saved.get('seed')}, which a resumed run keeps (its data order and noise follow "
                         f"it); drop --seed")
    changed = [f"--{k} {getattr(args, k)} (was {saved[k]})" for k in args.given
               if k in saved and k not in MACHINE_FLAGS and saved[k] != getattr(args, k)]
    values = {key: saved.get(key, DEFAULTS[key]) for key in DEFAULTS
              if key not in args.given and key not in MACHINE_FLAGS}
    values.update({flag: config.get(key, DEFAULTS[flag]) for key, flag in MODEL_FLAGS.items()})
    for name, flags in SCHEDULE_FLAGS.items():  # a checkpoint from before a schedule: its flags as resumed
        for flag, attr in flags:
            if name in state and flag not in args.given:
                values[flag] = state[name][attr]
    log(f"resuming from {path} at step {state['step']}, with its run's flags"
        + (f" except {', '.join(changed)}" if changed else ""))
    return values


def check_model_flags(config, flags_config, given, path):
    """Refuse to resume when a model flag given now differs from the checkpoint's model configuration."""
    differ = [f"--{flag} {flags_config[k]} (checkpoint: {config.get(k)})"
              for k, flag in MODEL_FLAGS.items() if flag in given and config.get(k) != flags_config[k]]
    if differ:
        raise checkpoint.CheckpointError(f"{path} was trained with another model configuration: "
                                         f"{', '.join(differ)}; drop those flags to resume it, or start a "
                                         f"new run with another --log_dir")


def restore(state, optimizer, schedules, run):
    """Load the optimizer's and the schedules' state (a dict name -> schedule) from a checkpoint, each
    schedule's ends and length then set to the run's (the checkpoint's, or a flag given now); returns the
    step to start from (0 without a checkpoint)."""
    if not state:
        return 0
    optimizer.load_state_dict(state["optimizer"])
    for name, schedule in schedules.items():
        if name in state:
            schedule.load_state_dict(state[name])
        else:  # a checkpoint from before the KL weight (beta 1 throughout): its schedule at the step reached
            schedule.t = state["step"]
        for flag, attr in SCHEDULE_FLAGS[name]:
            setattr(schedule, attr, getattr(run, flag))
    lr = schedules["lr_schedule"]
    if any(flag in run.given for flag, _ in SCHEDULE_FLAGS["lr_schedule"]):
        for group in optimizer.param_groups:  # the changed schedule's rate at the step reached
            group["lr"] = linear_anneal(lr.last_epoch, lr.mu_i, lr.mu_f, lr.n)
        lr._last_lr = [group["lr"] for group in optimizer.param_groups]
    return state["step"]

