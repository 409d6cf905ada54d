"""train.py's command line: its flags, the presets and the defaults.

parse_args(argv) gives the flags merged over the preset's values over DEFAULTS (the original's, which
are the paper's), with args.given naming the flags the user gave (a resumed run checks those against
its checkpoint). `python train.py --help` lists every flag with its default and the presets' values.
"""

import argparse
import math
import sys

from gqn_dataset import BUILTIN_DATASETS
from model import OBSERVATION_HEADS, REPRESENTATIONS

# Presets set the defaults of flags the user did not give. "paper" is the original's setting.
PRESETS = {
    "paper": dict(),
    # a small GQN that renders the built-in Shepard-Metzler scenes within a CPU's few minutes, chosen by the
    # sweep (experiments/README.md): the geometric representation and its gated 64x64 rendering (not the
    # paper's), exactly the 3 context views it is evaluated with, sigma brought to 0.3 early, and the KL
    # weight rising from 0.3 so that z comes into use
    "demo": dict(
        representation="geometric_fine", layers=4, shared_core=True, upsample="broadcast", h_dim=32,
        r_dim=96, z_dim=3, observation="render_gate", batch_size=8, gradient_steps=480, mu_i=1e-3, mu_f=3e-4,
        mu_n=1200, sigma_i=1.0, sigma_f=0.3, sigma_n=240, beta_i=0.3, beta_f=1.0, beta_n=480, min_context=3,
        max_context=3, log_interval=160, save_interval=480, workers=1, builtin_parts=5,
        builtin_train_scenes=4000, builtin_test_scenes=200, seed=0,
    ),
    # the paper's networks (tower representation, the paper's cores, z, ELBO and sigma schedule) on the
    # built-in rooms (dataset/rooms.py, like rooms_ring_camera), small enough for a CPU's 15 minutes; chosen
    # by the rooms sweep (experiments/README.md), which kept the paper's sigma schedule
    "rooms": dict(
        builtin="rooms", representation="tower", layers=4, shared_core=True, upsample="broadcast",
        h_dim=32, r_dim=32, z_dim=3, batch_size=16, gradient_steps=1200, mu_i=1e-3, mu_f=3e-4, mu_n=1500,
        min_context=3, max_context=3, log_interval=200, save_interval=400, workers=1,
        builtin_train_scenes=4000, builtin_test_scenes=200, seed=0,
    ),
}
# the rooms preset's networks on the built-in mazes, on fewer scenes (each holds 300 views and takes 30 times
# a room's rendering), with a KL weight of 3 (departs from the paper's 1): three views leave a maze's wall
# pattern and corridors past guessing, z learns to carry them at weight 1, and a sample of it from the
# prior then draws detail in the wrong place; at 3 the generation is the blur that predicts the view best
PRESETS["mazes"] = dict(PRESETS["rooms"], builtin="mazes", builtin_train_scenes=1000, beta_i=3.0, beta_f=3.0)
# the rooms preset's networks on the built-in Jaco arm, on the 2,000 scenes it renders by default (MuJoCo's
# frames cost about 20 times a room's), twice the steps, and the pixel sigma brought from 2.0 to the paper's
# final 0.7 within the run (departs from the paper's 2e5 steps): at 2.0 the thin arm's pixels weigh too
# little against the floor and sky for its pose to be learnt in minutes
PRESETS["jaco"] = dict(PRESETS["rooms"], builtin="jaco", builtin_train_scenes=2000, gradient_steps=2400,
                       mu_n=3000, sigma_f=0.7, sigma_n=1200, save_interval=800)

# the demo's recipe (a small GQN, the render gate, sigma brought down early, the KL weight rising) with the
# geometric representation for cameras inside a room (geometric.GeometricRooms, not the paper's) on the
# built-in rooms, within a CPU's 15 minutes
PRESETS["rooms_geometric"] = dict(
    PRESETS["demo"], builtin="rooms", representation="geometric_rooms", batch_size=16, gradient_steps=1000,
    mu_n=1200, sigma_n=300, beta_n=1000, log_interval=200, save_interval=500, builtin_train_scenes=4000,
    builtin_test_scenes=200, builtin_parts=7)
# the same on the built-in Jaco arm, with the backdrop of its floor and sky (geometric.GeometricJaco)
PRESETS["jaco_geometric"] = dict(PRESETS["rooms_geometric"], builtin="jaco", representation="geometric_jaco",
                                 builtin_train_scenes=2000)

DEFAULTS = dict(
    gradient_steps=2_000_000, batch_size=36, dataset=None, train_data_dir=None,
    test_data_dir=None, root_log_dir="runs", log_dir="GQN", log_interval=100, save_interval=10_000,
    workers=None, device_ids=[0], representation="pool", layers=12, shared_core=False,
    upsample="learned", h_dim=128, r_dim=256, z_dim=3, seed=None, mu_i=5e-4, mu_f=5e-5, mu_n=1.6e6,
    sigma_i=2.0, sigma_f=0.7, sigma_n=2e5, dtype="float32", compile=False, keep=5,
    data_root="data", builtin="shepard_metzler", builtin_parts=7, builtin_train_scenes=None,
    builtin_test_scenes=None,
    test_context=3, eval_scenes=200, skip_nonfinite=False, skip_bad_scenes=False, min_context=1,
    max_context=None, beta_i=1.0, beta_f=1.0, beta_n=1, observation="eta_g",
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


def nonnegative_float(s):
    value = float(s)
    if not value >= 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {s!r}")
    return value


def add_checkpoint_arguments(p, context_help="context views per scene (default 3)"):
    """The flags evaluate.py, sample.py and explore.py share, under the names train.py gives the same things:
    --checkpoint, --data_dir, --eval_context (also --context), --seed, --device."""
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by train.py (or checkpoint.py)")
    p.add_argument("--data_dir", default=None,
                   help="a test split folder: built-in scenes, converted DeepMind data or torch-gqn's files "
                        "(default: the built-in test split the checkpoint's run trained next to, rendered if "
                        "absent)")
    p.add_argument("--eval_context", "--context", dest="context", type=positive_int, default=3, metavar="M",
                   help=context_help)
    p.add_argument("--seed", type=nonnegative_int, default=0,
                   help="chooses each scene's context and query views (as evaluate.py does) and the model's "
                        "noise (default 0)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when there is one)")


class OldSpelling(argparse.Action):
    """A flag's former name, still accepted: stores into the new flag's value and says so in one line."""

    def __init__(self, option_strings, dest, new_name=None, **kwargs):
        self.new_name = new_name
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"note: {option_string} is now called {self.new_name}; both work", file=sys.stderr)
        setattr(namespace, self.dest, values)


def build_parser():
    p = argparse.ArgumentParser(
        description="Train a Generative Query Network (Eslami et al. 2018). Without --train_data_dir it "
                    "trains on built-in rendered scenes (--builtin), rendered once into --data_root.")
    S = argparse.SUPPRESS  # defaults are applied after the preset, so we can tell what was given
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper",
                   help="default values for the flags not given: 'paper' (the original's), 'demo' (small, "
                        "CPU, built-in Shepard-Metzler scenes), 'rooms' (the paper's networks, small, CPU, "
                        "built-in rooms), 'mazes' and 'jaco' (the same on those), 'rooms_geometric' and "
                        "'jaco_geometric' (the demo's recipe with the geometric representation for them)")

    a = p.add_argument_group("the original's flags (torch-gqn's names)").add_argument
    a("--gradient_steps", type=positive_int, default=S, help="number of training steps (paper: 2e6)")
    a("--batch_size", type=positive_int, default=S,
      help="scenes per step, over all GPUs/processes (paper: 36)")
    a("--dataset", default=S,
      help="the kind of data, Shepard-Metzler, Room, Jaco or Labyrinth: sets the most context views K as the "
           "paper does (default: the built-in data's kind; Shepard-Metzler with --train_data_dir)")
    a("--train_data_dir", default=S, help="training split folder; absent: the built-in rendered scenes")
    a("--test_data_dir", default=S,
      help="test split folder (needed with --train_data_dir; absent, the built-in scenes' test split)")
    a("--root_log_dir", default=S, help="folder of all runs")
    a("--log_dir", default=S, help="this run's folder under --root_log_dir")
    a("--log_interval", type=positive_int, default=S, help="steps between test metrics and images")
    a("--save_interval", type=positive_int, default=S, help="steps between checkpoints")
    a("--workers", type=nonnegative_int, default=S,
      help="DataLoader worker processes per training process (default: 1 on CPU, up to 8 per GPU)")
    a("--device_ids", type=int, nargs="+", default=S, help="CUDA devices; several wrap DataParallel")
    a("--representation", choices=list(REPRESENTATIONS), default=S,
      help="representation network: the paper's pool, tower or pyramid, or 'geometric', which projects the "
           "query camera's rays into the context views with the known cameras (departs from the paper; "
           "made for objects seen from outside, as Shepard-Metzler; geometric.py), or "
           "'geometric_fine', which also renders the query view at full resolution (needs --r_dim > 64)")
    a("--layers", type=positive_int, default=S, help="number of generative layers, the paper's L (paper: 12)")
    a("--shared_core", type=str2bool, nargs="?", const=True, default=S,
      help="one core for all L steps (true/false; the flag alone means true)")
    a("--seed", type=int, default=S,
      help="random seed: the same seed gives the same run (default: drawn and logged)")

    a = p.add_argument_group("data").add_argument
    a("--builtin", choices=list(BUILTIN_DATASETS), default=S,
      help="the built-in scenes used without --train_data_dir, which also set K unless --dataset or "
           "--max_context is given: Shepard-Metzler objects (dataset/shepard_metzler.py), rooms like "
           "rooms_ring_camera or rooms_free_camera_* (dataset/rooms.py), mazes (dataset/mazes.py), or the "
           "Jaco arm (dataset/jaco.py, MuJoCo: pip install -r requirements-jaco.txt)")
    a("--builtin_parts", type=int, choices=[5, 7], default=S,
      help="cubes per built-in Shepard-Metzler object")
    a("--builtin_train_scenes", type=positive_int, default=S,
      help="built-in training scenes (default: 20000, mazes and jaco 2000)")
    a("--builtin_test_scenes", type=positive_int, default=S,
      help="built-in test scenes (default: 1000, mazes and jaco 200)")
    a("--data_root", default=S, help="where the built-in scenes are rendered and cached")
    a("--min_context", type=positive_int, default=S,
      help="least context views M per training batch; the paper draws M ~ Uniform{1..K} (departs from it "
           "when > 1)")
    a("--max_context", type=positive_int, default=S,
      help="most context views K per training batch (default: set by the data's kind, as the paper; departs "
           "from it when given)")

    a = p.add_argument_group("model (beyond the original's flags)").add_argument
    a("--upsample", choices=["learned", "broadcast"], default=S,
      help="how v_q and r reach the 16x16 core: learned transposed convs (original) or broadcasting")
    a("--h_dim", type=positive_int, default=S, help="conv-LSTM hidden channels (paper: 128)")
    a("--r_dim", type=positive_int, default=S, help="representation channels (paper: 256)")
    a("--z_dim", type=positive_int, default=S, help="latent channels (paper: 3)")
    a("--observation", choices=list(OBSERVATION_HEADS), default=S,
      help="the observation head: the paper's eta_g (a 1x1 conv of the canvas u_L), or 'render_gate', which "
           "shows the geometric representation's own rendering of the query view where a learned gate judges "
           "it right (departs from the paper; geometric representations only)")
    a("--dtype", choices=["float32", "bfloat16"], default=S, help="compute type (bfloat16: autocast)")
    a("--compile", type=str2bool, nargs="?", const=True, default=S, help="torch.compile the model")

    a = p.add_argument_group("schedules (learning rate mu, pixel sigma, KL weight beta: initial, final, "
                             "steps to anneal over)").add_argument
    a("--mu_i", type=positive_float, default=S, help="initial learning rate")
    a("--mu_f", type=positive_float, default=S, help="final learning rate")
    a("--mu_n", type=positive_float, default=S, help="steps over which the learning rate anneals")
    a("--sigma_i", type=positive_float, default=S, help="initial pixel standard deviation")
    a("--sigma_f", type=positive_float, default=S, help="final pixel standard deviation")
    a("--sigma_n", type=positive_float, default=S, help="steps over which sigma anneals")
    a("--beta_i", type=positive_float, default=S,
      help="initial weight of the KL term in the training loss (paper: 1, no weight; departs from it when "
           "not 1)")
    a("--beta_f", type=positive_float, default=S, help="final KL weight (paper: 1)")
    a("--beta_n", type=positive_float, default=S,
      help="steps over which the KL weight anneals from --beta_i to --beta_f")

    group = p.add_argument_group("evaluation (the same names in evaluate.py and sample.py)")
    group.add_argument("--eval_context", dest="test_context", type=positive_int, default=S, metavar="M",
                       help="context views in the test metrics and the final evaluation")
    group.add_argument("--test_context", dest="test_context", type=positive_int, default=S,
                       action=OldSpelling, new_name="--eval_context", help=S)
    group.add_argument("--eval_scenes", type=nonnegative_int, default=S,
                       help="held-out scenes in the final evaluation (0: none)")

    a = p.add_argument_group("continuing and robustness").add_argument
    a("--resume", nargs="?", const="latest", default=None,
      help="continue from the newest checkpoint in the log folder, or from the given file")
    a("--init_from", default=None, metavar="CHECKPOINT",
      help="start a new run from this checkpoint's weights (step 0, a new optimizer and schedules), the "
           "model built from this run's flags: every weight must fit it, and parts its flags add start at "
           "their initial values")
    a("--keep", type=positive_int, default=S, help="how many newest checkpoints to keep")
    a("--skip_nonfinite", type=str2bool, nargs="?", const=True, default=S,
      help="skip a step whose loss is not finite (counted in the logs) instead of stopping")
    a("--skip_bad_scenes", type=str2bool, nargs="?", const=True, default=S,
      help="leave out (and count in the logs) scenes that fail their checks instead of stopping")
    for action in p._actions:  # say each default (and the presets') in --help
        if action.dest in DEFAULTS and action.help != S:
            said = [f"default: {DEFAULTS[action.dest]}"] if DEFAULTS[action.dest] is not None else []
            said += [f"{name}: {values[action.dest]}" for name, values in PRESETS.items()
                     if action.dest in values]
            if said:
                action.help += f" ({'; '.join(said)})"
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    given = set(vars(args))
    merged = {**DEFAULTS, **PRESETS[args.preset], **{k: v for k, v in vars(args).items() if k in given}}
    args = argparse.Namespace(**merged)
    args.given = sorted(given - {"preset", "resume", "init_from"})
    return args


# The model's configuration (GQN's keyword arguments, saved in every checkpoint) and the flag of each.
MODEL_FLAGS = dict(representation="representation", L="layers", shared_core="shared_core",
                   upsample="upsample", r_dim="r_dim", h_dim="h_dim", z_dim="z_dim",
                   observation="observation")

# Flags of the machine a run is on rather than of the run: a resumed run takes them from its command line.
MACHINE_FLAGS = ("device_ids", "workers", "compile", "root_log_dir", "log_dir")


def model_config(args):
    return {key: getattr(args, flag) for key, flag in MODEL_FLAGS.items()}

