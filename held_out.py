"""A trained checkpoint opened with the held-out scenes of its run: what evaluate.py, sample.py, explore.py
and experiments/learning_curve.py start from.

    opened = held_out.open_with_test_data("assets/gqn-rooms.pt")      # or data_dir="DIR/test"
    opened.model, opened.dataset, opened.data_dir, opened.state

Without a data folder the test split is the built-in one the checkpoint's run trained next to (its flags
--builtin, --data_root, --builtin_parts, --builtin_test_scenes), rendered when absent: the test split
alone, the same bytes as the one training rendered (each scene is a function of (seed, split, index)),
marked so that a later train.py on the same folder renders the training split it lacks.
"""

import os
from dataclasses import dataclass

import torch

import checkpoint
import gqn_dataset
from dataset.builtin import RenderError
from dataset.errors import DatasetError
from runtime import UsageError

HERE = os.path.dirname(os.path.abspath(__file__))


def check_context(context, num_views, data_dir):
    """M context views and a query must be distinct views of a scene: 1 <= context <= S - 1."""
    if not 1 <= context < num_views:
        raise UsageError(f"--context {context} is out of range: the scenes of {data_dir} have {num_views} "
                         f"views, so pass --context between 1 and {num_views - 1}")


def builtin_test_dir(state):
    """The built-in scenes' test split the checkpoint's run trained next to (the path its run used:
    relative to the working directory, or to this folder where the run was started from here)."""
    args = state.get("args", {})
    if args.get("train_data_dir"):
        raise DatasetError("this checkpoint was trained on --train_data_dir data; pass --data_dir with its "
                           "test split")
    root = gqn_dataset.builtin_root(args.get("builtin", "shepard_metzler"), args.get("data_root", "data"),
                                    args.get("builtin_parts", 7))
    here = os.path.join(HERE, root)
    if not os.path.isabs(root) and not os.path.isdir(root) and os.path.isdir(here):
        root = here
    return os.path.join(root, "test")


def test_split(state, data_dir=None):
    """--data_dir, or the checkpoint's built-in test split, rendered first when it is not complete."""
    if data_dir is not None:
        return data_dir
    test_dir = builtin_test_dir(state)
    args = state.get("args", {})
    root = os.path.dirname(test_dir)
    if not os.path.isdir(test_dir):
        print(f"no --data_dir and no {test_dir}: rendering the checkpoint's built-in test scenes into {root} "
              f"(once)")
    try:
        _, test_dir = gqn_dataset.ensure_builtin(
            args.get("builtin", "shepard_metzler"), root, args.get("builtin_train_scenes", 20_000),
            args.get("builtin_test_scenes", 1_000), args.get("builtin_parts", 7), splits=("test",))
    except RenderError as e:
        raise UsageError(f"{e} (or pass --data_dir)") from None
    return test_dir


@dataclass
class Opened:
    """A checkpoint opened with its test data."""
    state: dict
    model: torch.nn.Module     # on the device, in eval mode
    data_dir: str
    dataset: object            # gqn_dataset.SceneViews of data_dir
    sigma: float = None        # the pixel sigma its run reached (with_sigma=True)


def open_with_test_data(path, data_dir=None, context=3, device="cpu", with_sigma=False):
    """Load the checkpoint at `path`, rebuild its model on `device`, and open `data_dir` (default: the
    built-in test split its run trained next to, rendered if absent), checking that `context` views and a
    query fit its scenes. With with_sigma, also the sigma its run reached (checked before any rendering)."""
    state = checkpoint.load(path)
    model = checkpoint.rebuild_model(state).to(device).eval()
    sigma = checkpoint.run_sigma(state, path) if with_sigma else None
    data_dir = test_split(state, data_dir)
    dataset = gqn_dataset.SceneViews(data_dir)
    check_context(context, dataset.num_views, data_dir)
    return Opened(state, model, data_dir, dataset, sigma)
