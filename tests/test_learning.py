"""Training learns: a tiny GQN on a small fixed set of built-in scenes, a few hundred steps, must lower
its held-out loss and render held-out query views better than the mean of their context views; and where
the context cannot tell the query view, z must carry it (reconstructions far better than generations).

This is the test that fails when learning breaks (a schedule that never reaches the optimizer, a core
that ignores its state, a loss with the wrong sign, a representation that is never used), whatever
the other tests say about shapes and files."""

import json

import pytest

import train
from conftest import write_random_split

# fixed pixel sigma, so that held-out -ELBOs at different steps compare; a KL weight of 0.1 (not the paper's
# 1): with it the generations' object IoU beats the mean context view's within these steps (0.616 against
# 0.603), with 1 it ties
TINY_RECIPE = ["--representation", "tower", "--r_dim", "16", "--h_dim", "16", "--layers", "2",
               "--shared_core", "--upsample", "broadcast", "--batch_size", "8", "--gradient_steps", "300",
               "--mu_i", "2e-3", "--mu_f", "1e-3", "--mu_n", "300", "--sigma_i", "0.3", "--sigma_f", "0.3",
               "--min_context", "3", "--max_context", "3", "--log_interval", "50", "--save_interval", "300",
               "--workers", "0", "--eval_scenes", "48", "--test_context", "3", "--seed", "0", "--beta_i",
               "0.1", "--beta_f", "0.1"]


@pytest.fixture(scope="module")
def small_scenes(seed0_scenes):
    """400 training and 48 test scenes of Shepard-Metzler objects of 5 cubes (seed 0)."""
    return seed0_scenes("sm5")


def train_and_read(splits, run_dir, recipe):
    """Train with `recipe` on the (train, test) splits into run_dir: its test_metrics.jsonl rows and
    final.json."""
    train_dir, test_dir = splits
    train.train(train.parse_args(["--train_data_dir", train_dir, "--test_data_dir", test_dir,
                                  "--root_log_dir", str(run_dir.parent), "--log_dir", run_dir.name, *recipe]))
    with open(run_dir / "test_metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    with open(run_dir / "final.json") as f:
        final = json.load(f)
    print({k: round(v, 4) for k, v in final.items() if isinstance(v, float)})
    return rows, final


def test_a_tiny_gqn_learns_the_built_in_scenes(small_scenes, tmp_path):
    rows, final = train_and_read(small_scenes, tmp_path / "learn", TINY_RECIPE)
    first, last = rows[0], rows[-1]
    assert (first["step"], last["step"]) == (50, 300)
    assert last["neg_elbo"] < first["neg_elbo"]                         # the held-out loss falls
    assert final["mse_generation"] < final["mse_mean_context"]           # and beats a 3D-blind guess
    assert final["iou_generation"] > final["iou_mean_context"]           # the object's outline, not a smear


# the geometric representation (not the paper's) carries the cameras' geometry from the first step, so a
# tiny model's generations beat the mean context within 100 steps (measured: 0.83x its MSE, IoU 0.65 against
# 0.59); broken projection (wrong camera axes, pixel convention or depth range) leaves it a blob
GEOMETRIC_RECIPE = ["--representation", "geometric", "--r_dim", "24", "--h_dim", "16", "--layers", "2",
                    "--shared_core", "--upsample", "broadcast", "--batch_size", "8", "--gradient_steps",
                    "100", "--mu_i", "2e-3", "--mu_f", "1e-3", "--mu_n", "100", "--sigma_i", "0.3",
                    "--sigma_f", "0.3", "--min_context", "3", "--max_context", "3", "--log_interval", "100",
                    "--save_interval", "100", "--workers", "0", "--eval_scenes", "32", "--test_context", "3",
                    "--seed", "0"]


def test_a_geometric_gqn_renders_held_out_views(small_scenes, tmp_path):
    _, final = train_and_read(small_scenes, tmp_path / "geo", GEOMETRIC_RECIPE)
    assert final["mse_generation"] < 0.9 * final["mse_mean_context"]
    assert final["iou_generation"] > final["iou_mean_context"] + 0.03


# the paper's networks (the tower, the paper's cores) on the built-in rooms: within 200 steps the generations
# have the sky, the walls and the floor in their colours and bands, better than the nearest context view
# (measured: MSE 0.0282 against 0.0304; the mean of the context views 0.0266 takes longer to beat)
ROOMS_RECIPE = ["--representation", "tower", "--r_dim", "32", "--h_dim", "32", "--layers", "2",
                "--shared_core", "--upsample", "broadcast", "--batch_size", "8", "--gradient_steps", "200",
                "--mu_i", "1e-3", "--mu_f", "5e-4", "--mu_n", "200", "--sigma_i", "1.0", "--sigma_f", "0.4",
                "--sigma_n", "200", "--min_context", "3", "--max_context", "3", "--log_interval", "100",
                "--save_interval", "200", "--workers", "0", "--eval_scenes", "48", "--test_context", "3",
                "--seed", "0", "--dataset", "Room"]


def test_the_papers_networks_learn_the_built_in_rooms(seed0_scenes, tmp_path):
    rows, final = train_and_read(seed0_scenes("rooms"), tmp_path / "rooms", ROOMS_RECIPE)   # 400 and 48 rooms
    assert rows[-1]["neg_elbo"] < rows[0]["neg_elbo"]                    # the held-out loss falls
    assert final["mse_generation"] < final["mse_nearest_context"]        # and beats a 3D-blind guess
    # the room, in colour
    assert final["wall_error_generation"] < 0.2 and final["floor_error_generation"] < 0.2


# z's own test. Each view of these scenes is a square of random colour at a random place, unrelated to the
# other views: the context says nothing of the query, so only z can carry it. The posterior must encode the
# query view and the generator decode it: the KL grows and the reconstructions beat the generations by far.
# (On the built-in scenes the posterior stays collapsed, KL under 1 nat, for the first several hundred steps
# of every model that fits a test's minute; experiments/README.md.)
Z_RECIPE = ["--representation", "tower", "--r_dim", "8", "--h_dim", "8", "--layers", "2", "--shared_core",
            "--upsample", "broadcast", "--batch_size", "8", "--gradient_steps", "150", "--mu_i", "4e-3",
            "--mu_f", "4e-3", "--mu_n", "150", "--sigma_i", "0.1", "--sigma_f", "0.1", "--min_context", "3",
            "--max_context", "3", "--log_interval", "150", "--save_interval", "150", "--workers", "0",
            "--eval_scenes", "16", "--test_context", "3", "--seed", "0"]


def test_z_carries_the_query_view_that_the_context_does_not_show(tmp_path):
    splits = (write_random_split(tmp_path / "train", scenes=200, seed=1, scenes_per_shard=100),
              write_random_split(tmp_path / "test", scenes=16, seed=2))
    _, final = train_and_read(splits, tmp_path / "z", Z_RECIPE)
    assert final["kl"] > 50                                               # z is used
    assert final["mse_reconstruction"] < 0.5 * final["mse_generation"]    # and carries the query view
