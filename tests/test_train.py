"""train.py: flags, a 3-step run that writes events and a checkpoint, exact --resume, clear errors."""

import glob
import os

import pytest
import torch

import checkpoint
import train

TINY = ["--layers", "2", "--h_dim", "8", "--r_dim", "16", "--batch_size", "4", "--workers", "0",
        "--log_interval", "2", "--eval_scenes", "0", "--seed", "3"]


def run(tiny_data, log_root, name, *extra):
    train_dir, test_dir = tiny_data
    argv = ["--train_data_dir", train_dir, "--test_data_dir", test_dir, "--root_log_dir", str(log_root),
            "--log_dir", name, *TINY, *extra]
    return train.train(train.parse_args(argv))


def test_shared_core_false_means_false_and_flag_alone_means_true():
    assert train.parse_args(["--shared_core", "false"]).shared_core is False
    assert train.parse_args(["--shared_core", "False"]).shared_core is False   # torch-gqn turned this on
    assert train.parse_args(["--shared_core", "true"]).shared_core is True
    assert train.parse_args(["--shared_core"]).shared_core is True
    assert train.parse_args([]).shared_core is False


def test_defaults_are_the_papers_and_presets_yield_to_given_flags():
    args = train.parse_args([])
    assert (args.batch_size, args.layers, args.gradient_steps, args.representation) == (36, 12, 2_000_000, "pool")
    assert (args.mu_i, args.mu_f, args.sigma_i, args.sigma_f) == (5e-4, 5e-5, 2.0, 0.7)
    demo = train.parse_args(["--preset", "demo", "--layers", "3"])
    assert demo.layers == 3 and demo.h_dim == train.PRESETS["demo"]["h_dim"]
    assert train.parse_args(["--device_ids", "0", "1", "2", "3"]).device_ids == [0, 1, 2, 3]


@pytest.mark.parametrize("argv", [["--batch_size", "0"], ["--layers", "0"], ["--representation", "cube"],
                                  ["--shared_core", "maybe"], ["--sigma_f", "-1"]])
def test_bad_flags_end_in_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as e:
        train.parse_args(argv)
    assert e.value.code == 2
    assert "error: argument" in capsys.readouterr().err


def test_three_steps_write_events_and_a_checkpoint_that_rebuilds_its_model(tiny_data, tmp_path):
    assert run(tiny_data, tmp_path, "a", "--gradient_steps", "3") == 3
    run_dir = tmp_path / "a"
    assert glob.glob(str(run_dir / "events.out.tfevents.*"))
    path = checkpoint.latest(run_dir / "checkpoints")
    assert os.path.basename(path) == "ckpt-00000003.pt"
    state = checkpoint.load(path)
    assert state["step"] == 3 and state["config"]["L"] == 2 and state["config"]["h_dim"] == 8
    model = checkpoint.build_model(state)   # from the file alone
    assert sum(p.numel() for p in model.parameters()) > 0
    assert state["sigma_schedule"]["t"] == 3 and state["lr_schedule"]["last_epoch"] == 3


def test_same_seed_same_run_and_an_existing_log_folder_is_fine(tiny_data, tmp_path):
    run(tiny_data, tmp_path, "a", "--gradient_steps", "2")
    run(tiny_data, tmp_path, "b", "--gradient_steps", "2")
    run(tiny_data, tmp_path, "b", "--gradient_steps", "2")  # the folder exists already: fine
    a = checkpoint.load(checkpoint.latest(tmp_path / "a" / "checkpoints"))["model"]
    b = checkpoint.load(checkpoint.latest(tmp_path / "b" / "checkpoints"))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_continues_at_step_four_exactly(tiny_data, tmp_path):
    run(tiny_data, tmp_path, "whole", "--gradient_steps", "4")
    run(tiny_data, tmp_path, "split", "--gradient_steps", "3")
    three = checkpoint.load(checkpoint.latest(tmp_path / "split" / "checkpoints"))
    assert run(tiny_data, tmp_path, "split", "--gradient_steps", "4", "--resume") == 4
    whole = checkpoint.load(checkpoint.latest(tmp_path / "whole" / "checkpoints"))
    resumed = checkpoint.load(checkpoint.latest(tmp_path / "split" / "checkpoints"))
    assert resumed["step"] == 4
    # Adam's step count carried over from the checkpoint (3) and advanced once
    steps = {int(s["step"]) for s in resumed["optimizer"]["state"].values()}
    assert steps == {4} and {int(s["step"]) for s in three["optimizer"]["state"].values()} == {3}
    for k in whole["model"]:
        assert torch.allclose(whole["model"][k], resumed["model"][k], atol=1e-6), k
    for k, s in whole["optimizer"]["state"].items():
        assert torch.allclose(s["exp_avg_sq"], resumed["optimizer"]["state"][k]["exp_avg_sq"], atol=1e-9)


def test_resume_without_a_checkpoint_says_so(tiny_data, tmp_path):
    with pytest.raises(train.UsageError, match="no checkpoint in"):
        run(tiny_data, tmp_path, "none", "--gradient_steps", "1", "--resume")


def test_resume_with_another_model_configuration_is_refused(tiny_data, tmp_path):
    run(tiny_data, tmp_path, "a", "--gradient_steps", "1")
    with pytest.raises(checkpoint.CheckpointError, match="another model configuration: --layers 3"):
        run(tiny_data, tmp_path, "a", "--gradient_steps", "2", "--resume", "--layers", "3")


def test_missing_data_folder_is_one_sentence_and_writes_nothing(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--train_data_dir", str(tmp_path / "nope"), "--root_log_dir", str(tmp_path / "runs")])
    assert "does not exist" in str(e.value.code) and str(tmp_path / "nope") in str(e.value.code)
    assert not (tmp_path / "runs").exists()
