"""Checkpoints: written atomically, loaded without unpickling code, carrying their own model config, upgraded
from older forms, and exported for sharing (`python checkpoint.py SRC DST`). Opening one with the test
scenes of its run is held_out.py's.

A checkpoint is a dict saved with torch.save: model (state dict), config (GQN's constructor
arguments, so `GQN(**config)` rebuilds the model from the file alone), optimizer, lr_schedule,
sigma_schedule, step and args (the run's flags, the seed among them: the data order and the noise of
every step are functions of (seed, step), so no generator state needs saving).
It is written to a temporary file, flushed to disk and renamed, so a kill at any moment leaves the
newest complete checkpoint loadable, and it is read with `torch.load(weights_only=True)`, which
refuses anything but tensors and plain containers. A checkpoint written before the render gate became an
observation head (config "render_gate": true) is read as the same model (`_upgrade`).
"""

import glob
import os
import re

import torch

from atomic_file import AtomicFile
from runtime import UsageError


class CheckpointError(Exception):
    """A checkpoint that cannot be used, said in one sentence."""


NAME = "ckpt-{:08d}.pt"
PATTERN = re.compile(r"ckpt-(\d+)\.pt$")


def ensure_writable(folder):
    """Create `folder` if needed and check that files can be written in it."""
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise CheckpointError(f"cannot write to the log folder {folder} ({e.strerror}); "
                              f"choose another --root_log_dir or fix its permissions") from None


def write(folder, step, keep=None, **state):
    """Write folder/ckpt-<step>.pt atomically; keep only the `keep` newest. Returns the path."""
    path = os.path.join(folder, NAME.format(step))
    try:
        os.makedirs(folder, exist_ok=True)
        with AtomicFile(path) as f:   # a full disk, a kill: no half-written file left to fill the disk
            torch.save(dict(state, step=step), f)
    except OSError as e:
        newest = latest(folder) if os.path.isdir(folder) else None
        raise CheckpointError(f"cannot write the checkpoint {path} ({e.strerror or e}); free space or fix "
                              f"the folder, then resume from the last complete one"
                              + (f", {os.path.basename(newest)}" if newest else "")) from None
    if keep:
        for old in checkpoints(folder)[:-keep]:
            os.remove(old)
    return path


def checkpoints(folder):
    """Complete checkpoints in `folder`, oldest first (temporary files of an interrupted save are ignored)."""
    found = []
    for path in glob.glob(os.path.join(folder, "ckpt-*.pt")):
        m = PATTERN.search(os.path.basename(path))
        if m:
            found.append((int(m.group(1)), path))
    return [p for _, p in sorted(found)]


def step_of(path):
    """The step in a checkpoint's file name."""
    return int(PATTERN.search(os.path.basename(path)).group(1))


def latest(folder):
    paths = checkpoints(folder)
    return paths[-1] if paths else None


def load(path, map_location="cpu"):
    """Read a checkpoint safely: only tensors and plain containers; anything else is refused."""
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint file at {path}; check the path")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a crafted or truncated file: never unpickle it unsafely
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a loadable checkpoint of this project ({first[:160]}); "
                              f"use a checkpoint written by train.py") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path} holds no model and config; use a checkpoint written by train.py "
                              f"(a torch-gqn state dict loads with torch_gqn.load_torch_gqn_state_dict)")
    return _upgrade(state, path)


# Model options that were measured and not adopted (experiments/README.md), and the last commit that has them.
REMOVED_OPTIONS = ("render_skip", "agreement_vote", "frustum_conv", "view_net")
LAST_COMMIT_WITH_REMOVED_OPTIONS = "49db708"


def _upgrade(state, path):
    """The checkpoint in today's form: a config's "render_gate": true is the observation head "render_gate",
    whose gate's weights moved from render_gate.* to eta_g.gate.*; a model built with a removed option is
    refused, naming the commit that still builds it."""
    config = dict(state["config"])
    used = [flag for flag in REMOVED_OPTIONS if config.pop(flag, False)]
    if used:
        raise CheckpointError(f"{path} was trained with --{used[0]}, an option measured and removed "
                              f"(experiments/README.md); use it with this project at commit "
                              f"{LAST_COMMIT_WITH_REMOVED_OPTIONS} "
                              f"(git checkout {LAST_COMMIT_WITH_REMOVED_OPTIONS})")
    if config.pop("render_gate", False):
        config["observation"] = "render_gate"
        old = "render_gate."
        state = dict(state, model={("eta_g.gate." + k[len(old):] if k.startswith(old) else k): w
                                   for k, w in state["model"].items()})
    return dict(state, config=config)


def _weights(state):
    """The checkpoint's state dict in this project's viewpoint order: a checkpoint whose "viewpoint_order" is
    "deepmind" (written elsewhere) has its weights converted."""
    from torch_gqn import convert_viewpoint_order
    if state.get("viewpoint_order", "torch-gqn") == "deepmind":
        return convert_viewpoint_order(state["model"], state["config"])
    return state["model"]


def rebuild_model(state):
    """The GQN a checkpoint holds, weights loaded, on the CPU. A checkpoint whose "viewpoint_order" is
    "deepmind" (written elsewhere) has its weights converted to this project's order."""
    from model import GQN
    size = state["config"].get("image_size", 64)
    if size != 64:  # every loader brings frames to 64x64 (dataset/jpeg.py)
        raise CheckpointError(f"the checkpoint's model renders {size}x{size} images; this project's data and "
                              f"scripts are 64x64")
    try:
        model = GQN(**state["config"])
        model.load_state_dict(_weights(state))
    except (TypeError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"the checkpoint's model does not rebuild from its configuration and weights "
                              f"({first[:160]}); "
                              f"use a checkpoint written by this project's train.py") from None
    return model


def load_weights(model, state, path):
    """Start `model` from a checkpoint's weights (train.py --init_from): every weight of the checkpoint must
    fit one of the model's; the model's parameters that the checkpoint lacks (a part another flag adds)
    keep their initial values. Returns the names of those parameters."""
    try:
        missing, unexpected = model.load_state_dict(_weights(state), strict=False)
    except RuntimeError as e:  # a weight of another shape
        first = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e).strip())
        unexpected, missing = [first[:160]], []
    if unexpected:
        raise CheckpointError(f"{path} holds weights that do not fit the model these flags make "
                              f"({unexpected[0]}); give the model flags it was trained with (its "
                              f"configuration: {state['config']})")
    return missing


def run_sigma(state, path="the checkpoint"):
    """The pixel sigma the checkpoint's run had reached."""
    from scheduler import SigmaSchedule
    if "sigma_schedule" not in state:
        raise UsageError(f"{path} records no sigma schedule; pass --sigma (e.g. 0.7, the paper's final "
                         f"value)")
    s = SigmaSchedule()
    s.load_state_dict(state["sigma_schedule"])
    return s.sigma


def export(src, dst, data_root="data"):
    """A checkpoint to share: the model, its config, the sigma its run reached, its step and flags, without
    the optimizer's state; `data_root` replaces the run's folder of built-in
    scenes, so evaluate.py and sample.py find (or render) them relative to where they are run."""
    state = load(src)
    keep = {k: state[k] for k in ("model", "config", "sigma_schedule", "viewpoint_order") if k in state}
    args = dict(state.get("args", {}))
    if not args.get("train_data_dir"):
        args["data_root"] = data_root
    out = dict(keep, args=args, step=state.get("step"), exported_from=os.path.basename(src))
    with AtomicFile(dst) as f:
        torch.save(out, f)
    return dst


if __name__ == "__main__":
    import argparse
    import sys
    p = argparse.ArgumentParser(description="Export a training checkpoint for sharing: weights, config and "
                                            "flags, without the optimizer state.")
    p.add_argument("src", help="a checkpoint written by train.py")
    p.add_argument("dst", help="the file to write")
    p.add_argument("--data_root", default="data",
                   help="folder of built-in scenes recorded in it (default: data)")
    a = p.parse_args()
    try:
        print(f"wrote {export(a.src, a.dst, a.data_root)}")
    except CheckpointError as e:
        sys.exit(f"error: {e}")
