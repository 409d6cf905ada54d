"""evaluate.py: the CLI on a tiny checkpoint writes every metric and baseline, the same seed gives the same
numbers, the baselines are what they say, and user mistakes end in one sentence."""

import json
import os
import math

import numpy as np
import pytest
import torch

import checkpoint
import evaluate
import gqn_dataset
import held_out
import metrics
from conftest import ROOT
from model import bits_per_dim



def run_cli(ckpt, test_dir, out, *extra):
    evaluate.main(["--checkpoint", ckpt, "--data_dir", test_dir, "--out", str(out), "--no_progress",
                   "--batch_size", "3", *extra])
    with open(out) as f:
        return json.load(f)


def test_cli_reports_every_metric_and_baseline_in_a_table_and_json(
        tiny_checkpoint, tiny_data, tmp_path, capsys):
    values = run_cli(tiny_checkpoint, tiny_data[1], tmp_path / "m.json", "--context", "2")
    table = capsys.readouterr().out
    # the names written out: a metric or baseline renamed or dropped in evaluate.py fails here
    methods = ("generation", "reconstruction", "black", "mean_context", "nearest_context")
    # each row starts with its name
    rows = {line.split()[0] for line in table.splitlines() if line.split()}
    assert {"neg_elbo", "kl", "nll", "bits_per_dim", *methods} <= rows
    for header in ("MSE", "PSNR (dB)", "IoU", "colour err", "NLL-floor"):
        assert header in table
    for name in ("neg_elbo", "kl", "nll", "bits_per_dim"):
        assert math.isfinite(values[name])
    expected = {
        "mse_generation", "psnr_generation", "iou_generation", "colour_error_generation",
        "nll_above_floor_generation",
        "mse_reconstruction", "psnr_reconstruction", "iou_reconstruction", "colour_error_reconstruction",
        "nll_above_floor_reconstruction",
        "mse_black", "psnr_black", "iou_black", "colour_error_black", "nll_above_floor_black",
        "mse_mean_context", "psnr_mean_context", "iou_mean_context", "colour_error_mean_context",
        "nll_above_floor_mean_context",
        "mse_nearest_context", "psnr_nearest_context", "iou_nearest_context", "colour_error_nearest_context",
        "nll_above_floor_nearest_context",
    }
    assert expected <= set(values), sorted(expected - set(values))
    for method in methods:
        assert 0 <= values[f"mse_{method}"] <= 1 and math.isfinite(values[f"psnr_{method}"])
        assert 0 <= values[f"iou_{method}"] <= 1 and 0 <= values[f"colour_error_{method}"] <= 1
        assert values[f"nll_above_floor_{method}"] >= 0
    assert "IoU" in table and "colour err" in table
    # black renders no object: IoU 0 on scenes that show one, colour error = the object's mean value
    assert values["iou_black"] == 0 and values["colour_error_black"] > 0.2
    # an image's NLL above the floor is its squared error over 2 sigma^2 (two code paths: MSE, Gaussian NLL),
    # and the model's NLL from its ELBO pass lies above the floor
    for method in ("generation", "black", "mean_context", "nearest_context"):
        assert values[f"nll_above_floor_{method}"] == pytest.approx(
            values[f"mse_{method}"] * 3 * 64 * 64 / (2 * values["sigma"] ** 2), rel=1e-4)
    assert values["nll"] > metrics.nll_floor(values["sigma"], (3, 64, 64))
    assert values["scenes"] == 8 and values["context"] == 2 and values["step"] == 2
    assert values["neg_elbo"] == pytest.approx(values["kl"] + values["nll"], rel=1e-5)
    # the same bits per dim as train.py logs
    assert values["bits_per_dim"] == pytest.approx(bits_per_dim(values["neg_elbo"], (3, 64, 64)), rel=1e-6)
    # PSNR is per image, then averaged: never below the PSNR of the mean MSE (Jensen)
    assert values["psnr_black"] >= -10 * math.log10(values["mse_black"]) - 1e-4
    # the sigma the run had reached after 2 steps of the default schedule (2.0 -> 0.7 over 2e5)
    assert values["sigma"] == pytest.approx(2.0 - 1.3 * 2 / 2e5)


def test_same_seed_same_numbers_and_another_seed_differs(tiny_checkpoint, tiny_data, tmp_path):
    a = run_cli(tiny_checkpoint, tiny_data[1], tmp_path / "a.json", "--seed", "5")
    b = run_cli(tiny_checkpoint, tiny_data[1], tmp_path / "b.json", "--seed", "5")
    c = run_cli(tiny_checkpoint, tiny_data[1], tmp_path / "c.json", "--seed", "6")
    numbers = [k for k in a if isinstance(a[k], float)]
    assert len(numbers) >= 14
    assert all(a[k] == b[k] for k in numbers)
    assert any(a[k] != c[k] for k in numbers)


def test_temperature_changes_only_the_generations(tiny_checkpoint, tiny_data, tmp_path):
    sampled = run_cli(tiny_checkpoint, tiny_data[1], tmp_path / "a.json")
    mean = run_cli(tiny_checkpoint, tiny_data[1], tmp_path / "b.json", "--temperature", "0")
    assert mean["temperature"] == 0 and sampled["temperature"] == 1
    # the prior's mean, not a sample
    assert mean["mse_generation"] != sampled["mse_generation"]
    assert mean["mse_reconstruction"] == sampled["mse_reconstruction"] and mean["kl"] == sampled["kl"]


def test_default_out_is_next_to_the_checkpoint(tiny_checkpoint, tiny_data, capsys):
    evaluate.main(["--checkpoint", tiny_checkpoint, "--data_dir", tiny_data[1], "--scenes", "2",
                   "--no_progress"])
    out = tiny_checkpoint[:-len(".pt")] + "-eval.json"
    assert f"wrote {out}" in capsys.readouterr().out
    with open(out) as f:
        assert json.load(f)["scenes"] == 2


def test_baselines_are_black_mean_and_nearest_context():
    x = torch.rand(2, 3, 3, 4, 4)
    v = torch.zeros(2, 3, 7)
    v[:, :, 0] = torch.tensor([0.0, 1.0, 2.0])           # cameras on the x axis
    v_q = torch.zeros(2, 7)
    v_q[0, 0], v_q[1, 0] = 1.9, 0.2                       # nearest: context view 2, then view 0
    b = metrics.baselines(x, v, v_q)
    assert torch.equal(b["black"], torch.zeros(2, 3, 4, 4))
    assert torch.allclose(b["mean_context"], x.mean(dim=1))
    assert torch.equal(b["nearest_context"][0], x[0, 2]) and torch.equal(b["nearest_context"][1], x[1, 0])


def test_builtin_test_dir_follows_the_checkpoints_run(tmp_path):
    state = dict(args=dict(data_root=str(tmp_path), builtin_parts=5))
    assert held_out.builtin_test_dir(state) == str(tmp_path / "shepard_metzler_5_parts" / "test")
    with pytest.raises(gqn_dataset.DatasetError, match="pass --data_dir"):
        held_out.builtin_test_dir(dict(args=dict(train_data_dir="/somewhere/train")))


def test_a_context_the_scenes_cannot_hold_ends_in_one_sentence(tiny_checkpoint, tiny_data, tmp_path):
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--checkpoint", tiny_checkpoint, "--data_dir", tiny_data[1], "--out",
                       str(tmp_path / "x.json"), "--context", "6"])     # tiny scenes have 6 views
    message = str(e.value.code)
    assert message.startswith("error: ") and "--context 6 is out of range" in message and "\n" not in message


@pytest.mark.parametrize("extra, says", [
    (["--context", "0"], "argument --eval_context/--context: must be a positive whole number, got '0'"),
    (["--eval_scenes", "0"], "argument --eval_scenes/--scenes: must be a positive whole number"),
    (["--sigma", "-1"], "argument --sigma: must be a positive number"),
    (["--temperature", "-0.5"], "argument --temperature: must be 0 or more"),
])
def test_bad_flags_are_usage_errors_in_one_line(tmp_path, extra, says, capsys):
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--checkpoint", "x.pt", "--out", str(tmp_path / "x.json"), *extra])
    assert e.value.code == 2 and says in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_train_py_names_for_the_held_out_scenes_work_in_evaluate_and_sample(tmp_path):
    """--eval_context and --eval_scenes mean in evaluate.py what they mean in train.py; the short names
    stay."""
    import sample
    assert sample.parse_args(["--checkpoint", "x.pt", "--eval_context", "2"]).context == 2
    with pytest.raises(SystemExit) as e:               # parsed: the missing checkpoint is what stops it
        evaluate.main(["--checkpoint", str(tmp_path / "x.pt"), "--eval_context", "2", "--eval_scenes", "4"])
    assert "no checkpoint file" in str(e.value.code)


def test_missing_checkpoint_and_missing_data_end_in_one_sentence(tiny_checkpoint, tmp_path):
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--checkpoint", str(tmp_path / "nope.pt")])
    assert str(e.value.code) == f"error: no checkpoint file at {tmp_path / 'nope.pt'}; check the path"
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--checkpoint", tiny_checkpoint, "--data_dir", str(tmp_path / "nodata")])
    assert str(e.value.code).startswith("error: ") and str(tmp_path / "nodata") in str(e.value.code)


@pytest.mark.parametrize("change, says", [
    (lambda s: s["config"].update(image_size=32),
     "renders 32x32 images; this project's data and scripts are 64x64"),
    (lambda s: s["config"].update(h_dim=9), "does not rebuild from its configuration and weights"),
    (lambda s: s["config"].update(colour="red"), "does not rebuild from its configuration and weights"),
])
def test_a_checkpoint_whose_model_cannot_be_rebuilt_is_one_sentence(
        tiny_checkpoint, tiny_data, tmp_path, change, says):
    """A hand-made or foreign checkpoint: its config or weights do not make a 64x64 model. evaluate.py (and
    sample.py and explore.py, through checkpoint.rebuild_model) ended in a shape error deep in the model."""
    state = torch.load(tiny_checkpoint, weights_only=True)
    change(state)
    torch.save(state, tmp_path / "odd.pt")
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--checkpoint", str(tmp_path / "odd.pt"), "--data_dir", tiny_data[1], "--out",
                       str(tmp_path / "x.json")])
    assert says in str(e.value.code) and "\n" not in str(e.value.code)


def _folder_bytes(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


@pytest.mark.parametrize("kind", ["shepard_metzler", "rooms"])
def test_opening_a_checkpoint_renders_its_test_split_alone_the_bytes_training_renders(tmp_path, capsys, kind):
    """evaluate.py, sample.py and explore.py render only the test split they read (not the 20,000 training
    scenes), the same bytes as training renders; train.py on that folder later renders the training
    split it lacks and does not take the folder as complete."""
    state = dict(args=dict(builtin=kind, data_root=str(tmp_path / "alone"), builtin_parts=5,
                           builtin_train_scenes=4, builtin_test_scenes=3))
    test_dir = held_out.test_split(state)
    root = os.path.dirname(test_dir)
    assert test_dir == held_out.builtin_test_dir(state) and "rendering" in capsys.readouterr().out
    assert len(gqn_dataset.SceneViews(test_dir)) == 3 and not os.path.exists(os.path.join(root, "train"))
    assert not os.path.exists(os.path.join(root, "DONE.json"))       # the folder is not complete
    assert held_out.test_split(state, "/given/dir") == "/given/dir"

    together = gqn_dataset.ensure_builtin(kind, str(tmp_path / "together"), 4, 3, 5)
    assert _folder_bytes(test_dir) == _folder_bytes(together[1])
    capsys.readouterr()
    train_dir, again = gqn_dataset.ensure_builtin(kind, root, 4, 3, 5)   # what train.py calls: both splits
    assert again == test_dir and _folder_bytes(train_dir) == _folder_bytes(together[0])
    assert os.path.exists(os.path.join(root, "DONE.json"))
    # the training split alone was rendered
    assert "scenes (train) into" in capsys.readouterr().out
    held_out.test_split(state)                                          # complete now: nothing rendered
    assert "rendered" not in capsys.readouterr().out


def test_object_iou_and_colour_error_on_known_images():
    truth = torch.zeros(2, 3, 8, 8)
    truth[:, 0, 2:6, 2:6] = 0.8                              # a 4x4 red square: 16 object pixels
    image = torch.zeros(2, 3, 8, 8)
    image[0] = truth[0]                                      # exact
    image[1, 1, 2:6, 4:8] = 0.5                              # a green 4x4 square shifted by 2 columns
    iou = metrics.object_iou(image, truth)
    assert iou[0] == 1 and iou[1] == pytest.approx(8 / 24)   # 8 shared pixels, 24 in the union
    colour = metrics.object_colour_error(image, truth)
    # image 1 over the true square: 8 pixels |(0,0.5,0) - (0.8,0,0)| = 1.3/3, 8 pixels 0.8/3
    assert colour[0] == 0 and colour[1] == pytest.approx((8 * 1.3 / 3 + 8 * 0.8 / 3) / 16)
    # dim pixels (largest channel 0.1 or less) are background, in the truth and in the image
    assert metrics.object_iou(torch.full((1, 3, 4, 4), 0.1), torch.zeros(1, 3, 4, 4)) == 1


def test_the_nll_floor_is_the_plateau_of_sigma_0_7():
    # 12,288 values at sigma 0.7: no image scores below 6,909 nats (the loss other GQN codes sit on)
    per_value = math.log(0.7) + 0.5 * math.log(2 * math.pi)
    assert metrics.nll_floor(0.7, (3, 64, 64)) == pytest.approx(12288 * per_value)
    assert round(metrics.nll_floor(0.7, (3, 64, 64))) == 6909
    x, mu = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    exact = -torch.distributions.Normal(mu, 0.5).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(metrics.nll_above_floor(mu, x, 0.5) + metrics.nll_floor(0.5, (3, 4, 4)), exact)


def test_an_exported_checkpoint_holds_the_same_model_without_the_optimizer(tiny_checkpoint, tmp_path):
    out = checkpoint.export(tiny_checkpoint, str(tmp_path / "shared.pt"), data_root="somewhere")
    full, shared = checkpoint.load(tiny_checkpoint), checkpoint.load(out)
    assert "optimizer" not in shared and shared["step"] == full["step"] == 2
    assert shared["args"] == full["args"]           # trained on --train_data_dir: its flags as they were
    assert all(torch.equal(full["model"][k], shared["model"][k]) for k in full["model"])
    assert checkpoint.run_sigma(shared) == checkpoint.run_sigma(full)
    # a run on the built-in scenes records where to find (or render) them, relative to the user
    state = {k: v for k, v in full.items() if k != "step"}
    state["args"] = dict(full["args"], train_data_dir=None, data_root="/tmp/x")
    builtin = checkpoint.write(str(tmp_path / "b"), 2, **state)
    assert checkpoint.load(checkpoint.export(builtin, str(tmp_path / "b.pt")))["args"]["data_root"] == "data"


def test_exporting_a_missing_checkpoint_is_one_sentence_and_writes_nothing(tmp_path):
    import subprocess
    import sys
    run = subprocess.run([sys.executable, os.path.join(ROOT, "checkpoint.py"), str(tmp_path / "nope.pt"),
                          str(tmp_path / "out.pt")], capture_output=True, text=True)
    assert run.returncode == 1
    assert run.stderr.strip() == f"error: no checkpoint file at {tmp_path / 'nope.pt'}; check the path"
    assert not (tmp_path / "out.pt").exists()


def experiment(name):
    """experiments/<name>.py as a module (the folder is not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "experiments", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_sweep_refuses_an_unknown_configuration_in_one_sentence(capsys):
    sweep = experiment("sweep")
    with pytest.raises(SystemExit) as e:
        sweep.main(["--run", "no_such_recipe"])
    assert str(e.value.code) == "error: no configuration named no_such_recipe; see --list"


def test_the_figure_scripts_name_a_missing_folder_or_file_in_one_sentence(tmp_path):
    """The learning curve and the models-beside-each-other figure, pointed at a folder or file that is not
    there, end in one sentence naming it, and write nothing."""
    missing = str(tmp_path / "nowhere")
    with pytest.raises(SystemExit) as e:
        experiment("rooms_models_figure").main(["--checkpoints", "a.pt", "--data_dir", missing,
                                                "--out", str(tmp_path / "fig.png")])
    assert str(e.value.code).startswith(f"error: data folder {missing} does not exist")
    with pytest.raises(SystemExit) as e:
        experiment("learning_curve").main(["--json", missing + ".json", "--out", str(tmp_path / "c.png")])
    assert str(e.value.code).startswith("error: ") and "nowhere.json" in str(e.value.code)
    assert list(tmp_path.iterdir()) == []


def test_an_exact_rendering_scores_what_the_readme_says_against_the_jpeg_frames():
    """The metrics' ceiling on the built-in scenes (README, "What the demo shows"): the exact
    rendering loses IoU and colour only to the frames' JPEG encoding, chiefly its chroma subsampling;
    oracle_bound scores with evaluate.py's metrics."""
    oracle = experiment("oracle_bound")
    rows, unseen = oracle.measure(scenes=6, draws=2)
    iou, colour = rows[oracle.EXACT]
    assert 0.88 < iou < 0.95 and 0.045 < colour < 0.07
    assert rows[oracle.FULL_CHROMA][0] > 0.97 and rows[oracle.FULL_CHROMA][1] < 0.03
    assert unseen < 0.02                         # 3 views show practically every cube
    from dataset import shepard_metzler as sm
    centres, colours, positions = sm.random_scene(0, "test", 0, 5)
    frame = sm.render_views(centres, colours, positions[:1])[0]
    clean = frame.astype(np.float32) / 255
    truth = oracle.jpeg_round_trip(frame)
    as_torch = [torch.from_numpy(a).permute(2, 0, 1)[None] for a in (clean, truth)]
    assert oracle.scores(clean, truth) == pytest.approx(
        (float(metrics.object_iou(*as_torch)), float(metrics.object_colour_error(*as_torch))), abs=1e-5)


def test_region_metrics_see_the_walls_the_floor_and_where_the_objects_stand():
    """On labelled scenes (the built-in rooms): the colour error over each region, and an object IoU that
    counts a rendered pixel as an object's when its colour is nearest a true object's."""
    labels = torch.zeros(2, 8, 8, dtype=torch.uint8)
    labels[:, 2:5], labels[:, 5:] = 1, 2                                   # sky, wall, floor bands
    labels[0, 4:7, 2:4] = 3                                               # an object in the first scene only
    colours = torch.tensor([[0.6, 0.9, 1.0], [0.9, 0.3, 0.4], [0.8, 0.8, 0.8], [0.1, 0.9, 0.1]])
    truth = colours[labels.long()].permute(0, 3, 1, 2)                    # (2, 3, 8, 8)
    exact = metrics.region_metrics(truth, truth, labels)
    assert exact["object_iou"].tolist() == [1.0, 1.0] and exact["wall_error"].tolist() == [0.0, 0.0]
    assert exact["object_error"][0] == 0 and torch.isnan(exact["object_error"][1])   # no object: no value
    empty_room = truth.clone()
    empty_room[0, :, 4:7, 2:4] = colours[1, :, None, None]                 # the object painted over with wall
    missing = metrics.region_metrics(empty_room, truth, labels)
    assert missing["object_iou"][0] == 0 and missing["object_error"][0] > 0.5
    assert missing["floor_error"][0] == 0
    moved = torch.roll(truth, shifts=1, dims=3)                           # the object drawn a pixel off
    assert 0 < metrics.region_metrics(moved, truth, labels)["object_iou"][0] < 0.5


def test_jaco_labels_score_the_arm_the_target_and_the_floor_under_their_own_names():
    """Labels in jaco's scheme (0 background, 1 floor, 2 arm, 3 target) give arm, target and floor metrics,
    not walls and objects, and the run's table names them."""
    from dataset.labels import JACO_SCHEME
    labels = torch.zeros(1, 8, 8, dtype=torch.uint8)
    labels[:, 4:] = 1                                                      # the floor below the background
    labels[:, 1:7, 3] = 2                                                  # the arm, a dark column
    labels[:, 5:7, 5:7] = 3                                                # the target
    colours = torch.tensor([[0.6, 0.7, 0.9], [0.7, 0.7, 0.65], [0.1, 0.1, 0.1], [0.9, 0.1, 0.2]])
    truth = colours[labels.long()].permute(0, 3, 1, 2)
    exact = metrics.region_metrics(truth, truth, labels, JACO_SCHEME)
    assert set(exact) == {"arm_error", "target_error", "floor_error", "arm_iou", "target_iou"}
    assert exact["arm_iou"].item() == 1 and exact["target_iou"].item() == 1 and exact["arm_error"].item() == 0
    no_target = truth.clone()
    no_target[:, :, 5:7, 5:7] = colours[1, :, None, None]                  # the target painted as floor
    missed = metrics.region_metrics(no_target, truth, labels, JACO_SCHEME)
    assert missed["target_iou"].item() == 0 and missed["arm_iou"].item() == 1
    table = metrics.image_table({f"{k}_{m}": 0.5 for m in metrics.IMAGE_METHODS
                                 for k in ("mse", "psnr", "iou", "colour_error", "nll_above_floor",
                                           *JACO_SCHEME.metric_names())})
    assert "arm err" in table and "target IoU" in table and "wall err" not in table
