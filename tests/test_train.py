"""train.py: flags, a 3-step run that writes events and a checkpoint, exact --resume, clear errors."""

import contextlib
import glob
import json
import os

import pytest
import torch

import checkpoint
import metrics
import train
from conftest import TINY_MODEL

TINY = [*TINY_MODEL, "--log_interval", "2", "--seed", "3"]


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
    assert (args.batch_size, args.layers, args.gradient_steps, args.representation) == \
        (36, 12, 2_000_000, "pool")
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
    events, = glob.glob(str(run_dir / "events.out.tfevents.*"))
    with open(events, "rb") as f:
        written = f.read()
    # TensorBoard's scalars of every step and the test metrics and image grids of every --log_interval steps
    for tag in ("train/neg_elbo", "train/kl", "train/sigma", "train/lr", "test/neg_elbo",
                "test/mse_generation", "test/iou_generation", "test/ground_truth", "test/generation",
                "test/reconstruction"):
        assert tag.encode() in written, tag
    path = checkpoint.latest(run_dir / "checkpoints")
    assert os.path.basename(path) == "ckpt-00000003.pt"
    state = checkpoint.load(path)
    assert state["step"] == 3 and state["config"]["L"] == 2 and state["config"]["h_dim"] == 8
    model = checkpoint.rebuild_model(state)   # from the file alone
    # the model the flags ask for (pool, L 2, h 8, r 16, z 3, learned upsampling, a core per step), its
    # parameters counted from the layer shapes (paper, Figures S1-S2; the k16 upsampling is torch-gqn's);
    # the same count gives torch-gqn's 571,619,279 for the paper's L 12, h 128, r 256
    x, v, r, h, z, L = 3, 7, 16, 8, 3, 2

    def conv(cin, cout, k, bias=True):
        return cin * cout * k * k + (cout if bias else 0)
    tower = (conv(x, r, 2) + conv(r, r, 2) + conv(r, r // 2, 3) + conv(r // 2, r, 2)
             + conv(r + v, r, 3) + conv(r + v, r // 2, 3) + conv(r // 2, r, 3) + conv(r, r, 1))
    upsample = conv(v, v, 16, bias=False) + conv(r, r, 16, bias=False)          # v_q and r to the 16x16 grid
    inference = (upsample + conv(h + (x + v + r) + (h + h), 4 * h, 5) + conv(x, x, 4, False)
                 + conv(h, h, 4, False))
    generation = upsample + conv(h + (v + r) + z, 4 * h, 5) + conv(h, h, 4, False)
    heads = conv(h, 2 * z, 5) + conv(h, 2 * z, 5) + conv(h, x, 1)              # prior, posterior, observation
    assert sum(p.numel() for p in model.parameters()) == tower + L * (inference + generation) + heads
    # and it holds the trained weights the file holds, every one of them
    weights = model.state_dict()
    assert set(weights) == set(state["model"])
    assert all(torch.equal(weights[k], state["model"][k]) for k in weights)
    assert state["sigma_schedule"]["t"] == 3 and state["lr_schedule"]["last_epoch"] == 3


def test_same_seed_same_run_and_an_existing_log_folder_is_fine(tiny_data, tmp_path):
    run(tiny_data, tmp_path, "a", "--gradient_steps", "2")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    run(tiny_data, tmp_path, "b", "--gradient_steps", "2")  # the folder exists already: fine
    a = checkpoint.load(checkpoint.latest(tmp_path / "a" / "checkpoints"))["model"]
    b = checkpoint.load(checkpoint.latest(tmp_path / "b" / "checkpoints"))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "b" / "notes.txt").read_text() == "mine"


def test_a_new_run_in_a_folder_with_an_earlier_runs_checkpoints_is_refused(tiny_data, tmp_path):
    """It saved among them: --keep deleted its own lower-numbered checkpoints (or the earlier run's), and a
    later --resume picked up either run."""
    run(tiny_data, tmp_path, "a", "--gradient_steps", "3")
    before = sorted(os.listdir(tmp_path / "a" / "checkpoints"))
    with pytest.raises(train.UsageError, match="holds the checkpoints of an earlier run "
                                               ".newest ckpt-00000003.pt.; continue it with --resume"):
        run(tiny_data, tmp_path, "a", "--gradient_steps", "2")
    assert sorted(os.listdir(tmp_path / "a" / "checkpoints")) == before


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


def test_resume_alone_continues_the_run_with_its_own_flags(tiny_data, tmp_path):
    """`--resume` with no other flags goes on with the run as it was started (its model, schedules,
    context views, data, logging), not with today's preset or defaults, and ends where the whole run does."""
    flags = ["--beta_i", "0.5", "--beta_n", "10", "--sigma_f", "0.5", "--sigma_n", "5", "--min_context", "2",
             "--max_context", "2", "--upsample", "broadcast"]
    run(tiny_data, tmp_path, "whole", "--gradient_steps", "3", *flags)
    run(tiny_data, tmp_path, "split", "--gradient_steps", "3", "--save_interval", "1", *flags)
    # as if killed after step 2's checkpoint
    os.remove(checkpoint.latest(tmp_path / "split" / "checkpoints"))
    argv = ["--root_log_dir", str(tmp_path), "--log_dir", "split", "--workers", "0", "--preset", "demo",
            "--resume"]
    args = train.parse_args(argv)
    given = dict(vars(args))
    assert train.train(args) == 3     # the run's own --gradient_steps, not the demo's 300
    assert vars(args) == given        # the continued run's flags are a new configuration, args untouched
    saved = json.loads((tmp_path / "split" / "args.json").read_text())
    assert (saved["beta_i"], saved["sigma_f"], saved["min_context"], saved["layers"], saved["upsample"],
            saved["eval_scenes"]) == (0.5, 0.5, 2, 2, "broadcast", 0)
    assert (saved["representation"], saved["h_dim"], saved["train_data_dir"]) == ("pool", 8, tiny_data[0])
    whole = checkpoint.load(checkpoint.latest(tmp_path / "whole" / "checkpoints"))
    resumed = checkpoint.load(checkpoint.latest(tmp_path / "split" / "checkpoints"))
    assert resumed["beta_schedule"] == whole["beta_schedule"]
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    logged = [json.loads(line)["step"] for line in lines]
    assert logged == [1, 2, 3]                 # step 3, redone after the resume, logged once
    for k in whole["model"]:
        assert torch.allclose(whole["model"][k], resumed["model"][k], atol=1e-6), k


def test_a_resumed_runs_seconds_go_on_from_where_it_stopped(tiny_data, tmp_path):
    """metrics.jsonl's and test_metrics.jsonl's "seconds" are the run's training time: after --resume they
    continue from the last kept step's, so plots against time and the sweep's minutes add the parts up."""
    run(tiny_data, tmp_path, "a", "--gradient_steps", "3")
    path = tmp_path / "a" / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[-1]["seconds"] = 1000.0                    # as if the first part had trained for 1,000 seconds
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run(tiny_data, tmp_path, "a", "--gradient_steps", "4", "--resume")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert 1000 < rows[-1]["seconds"] < 1000 + 600
    tests = [json.loads(line) for line in (tmp_path / "a" / "test_metrics.jsonl").read_text().splitlines()]
    assert tests[-1]["step"] == 4 and tests[-1]["seconds"] > 1000


def test_a_schedule_flag_given_on_resume_changes_the_rest_of_that_schedule(tiny_data, tmp_path):
    run(tiny_data, tmp_path, "a", "--gradient_steps", "2", "--mu_i", "1e-3", "--mu_f", "1e-4", "--mu_n",
        "100")
    run(tiny_data, tmp_path, "a", "--gradient_steps", "3", "--resume", "--mu_f", "1e-5", "--mu_n", "3")
    state = checkpoint.load(checkpoint.latest(tmp_path / "a" / "checkpoints"))
    lr = state["lr_schedule"]
    assert (lr["mu_i"], lr["mu_f"], lr["n"]) == (1e-3, 1e-5, 3)
    # the new schedule's end, at step 3
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-5)
    saved = json.loads((tmp_path / "a" / "args.json").read_text())
    assert (saved["mu_i"], saved["mu_f"], saved["mu_n"]) == (1e-3, 1e-5, 3)


def test_resume_with_another_seed_is_one_sentence(tiny_data, tmp_path):
    run(tiny_data, tmp_path, "a", "--gradient_steps", "1")
    with pytest.raises(train.UsageError, match="--seed 4 differs from the checkpoint's run's seed 3") as e:
        run(tiny_data, tmp_path, "a", "--gradient_steps", "2", "--resume", "--seed", "4")
    assert "\n" not in str(e.value)


def test_resume_from_a_file_goes_on_in_that_files_run_and_never_over_a_later_checkpoint(
        tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                                     # where the default runs/GQN would be
    run(tiny_data, tmp_path, "A", "--gradient_steps", "3", "--save_interval", "1")
    ckpts = tmp_path / "A" / "checkpoints"
    two, three = checkpoint.checkpoints(ckpts)[1:3]
    before = open(three, "rb").read()
    # an older checkpoint of a run with later ones: continuing it there would overwrite them; refused
    with pytest.raises(train.UsageError,
                       match="already holds a later checkpoint .ckpt-00000003.pt. than step 2"):
        run(tiny_data, tmp_path, "A", "--gradient_steps", "4", "--resume", two)
    assert open(three, "rb").read() == before
    # the newest, named as a file with no log folder: the run goes on in its own folder, not in runs/GQN
    train_dir, test_dir = tiny_data
    args = train.parse_args(["--train_data_dir", train_dir, "--test_data_dir", test_dir, "--resume", three,
                             "--gradient_steps", "4", "--workers", "0"])
    assert train.train(args) == 4
    assert checkpoint.step_of(checkpoint.latest(ckpts)) == 4 and not (tmp_path / "runs").exists()
    # a loose file: say where the run goes
    loose = tmp_path / "loose.pt"
    loose.write_bytes(open(three, "rb").read())
    with pytest.raises(train.UsageError, match="is not in a run's checkpoints/ folder"):
        train.train(train.parse_args(["--resume", str(loose)]))


def test_resume_without_a_checkpoint_says_so(tiny_data, tmp_path):
    with pytest.raises(train.UsageError, match="no checkpoint in"):
        run(tiny_data, tmp_path, "none", "--gradient_steps", "1", "--resume")


def test_resuming_an_exported_checkpoint_is_one_sentence(tiny_data, tmp_path):
    """An exported checkpoint (assets/, checkpoint.py) has no optimizer state: it cannot continue a run."""
    run(tiny_data, tmp_path, "a", "--gradient_steps", "1")
    exported = checkpoint.export(checkpoint.latest(tmp_path / "a" / "checkpoints"),
                                 str(tmp_path / "shared.pt"))
    with pytest.raises(train.UsageError, match="is an exported checkpoint") as e:
        run(tiny_data, tmp_path, "b", "--gradient_steps", "2", "--resume", exported)
    assert "\n" not in str(e.value) and "checkpoints/ folder" in str(e.value)


def test_resume_with_another_model_configuration_is_refused(tiny_data, tmp_path):
    run(tiny_data, tmp_path, "a", "--gradient_steps", "1")
    with pytest.raises(checkpoint.CheckpointError, match="another model configuration: --layers 3"):
        run(tiny_data, tmp_path, "a", "--gradient_steps", "2", "--resume", "--layers", "3")


def test_missing_data_folder_is_one_sentence_and_writes_nothing(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--train_data_dir", str(tmp_path / "nope"), "--root_log_dir", str(tmp_path / "runs")])
    assert "does not exist" in str(e.value.code) and str(tmp_path / "nope") in str(e.value.code)
    assert not (tmp_path / "runs").exists()


def test_min_and_max_context_bound_the_context_views_of_every_batch(tiny_data):
    import gqn_dataset
    loader = gqn_dataset.make_loader(tiny_data[0], 4, max_context=4, seed=1, workers=0, min_context=3)
    batches = iter(loader)
    counts = {next(batches)[0].shape[1] - 1 for _ in range(30)}
    assert counts == {3, 4}                      # M ~ U{3..4}: both drawn, nothing else
    # the paper's default M ~ U{1..K} draws exactly the batches it drew before min_context existed
    paper = gqn_dataset.ContextBatchSampler(12, 6, 4, 5, seed=2)
    assert {len(paper.batch(k)[0][1]) - 1 for k in range(60)} == {1, 2, 3, 4, 5}


@pytest.mark.parametrize("flags, says", [
    (["--representation", "geometric", "--r_dim", "16"], "the geometric representation needs r_dim > 16"),
    (["--representation", "geometric_fine", "--r_dim", "64"],
     "the geometric representation needs r_dim > 64"),
    (["--representation", "tower", "--observation", "render_gate"],
     "render_gate observation needs a representation that renders"),
])
def test_model_flags_that_make_no_model_are_a_usage_error(tiny_data, tmp_path, flags, says):
    with pytest.raises(train.UsageError, match=says) as e:
        run(tiny_data, tmp_path, "bad_model", "--gradient_steps", "1", *flags)
    assert "\n" not in str(e.value) and "change --representation, --r_dim or --observation" in str(e.value)


def test_min_context_above_max_context_is_a_usage_error(tiny_data, tmp_path):
    with pytest.raises(train.UsageError, match="--min_context 5 is more than the most context views, 4"):
        run(tiny_data, tmp_path, "ctx", "--gradient_steps", "1", "--min_context", "5", "--max_context", "4")


def test_kl_weight_changes_the_update_not_the_logged_elbo(tiny_data):
    """beta < 1 trains on nll + beta * KL (another gradient) but reports the true -ELBO = KL + NLL."""
    import gqn_dataset
    from model import GQN
    frames, viewpoints, _ = next(iter(gqn_dataset.make_loader(tiny_data[0], 4, 3, seed=0, workers=0)))
    results = []
    for beta in (1.0, 0.05):
        torch.manual_seed(0)
        model = GQN(representation="pyramid", L=2, h_dim=8, r_dim=16, upsample="broadcast")
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        torch.manual_seed(1)
        loss, kl, nll = train.train_step(model, optimizer, frames, viewpoints, 1.0, torch.device("cpu"),
                                         beta=beta)
        assert loss == pytest.approx(kl + nll, rel=1e-6) and kl > 0
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert not torch.allclose(results[0], results[1])


def test_test_metrics_reach_their_own_log(tiny_data, tmp_path):
    import json
    run(tiny_data, tmp_path, "t", "--gradient_steps", "4")
    with open(tmp_path / "t" / "test_metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert [r["step"] for r in rows] == [2, 4]
    for key in ("iou_generation", "colour_error_generation", "nll_above_floor_generation",
                "mse_mean_context"):
        assert all(0 <= r[key] < float("inf") for r in rows)


@pytest.mark.parametrize("env, argv, expected", [
    ({}, ["--device_ids", "0", "3"],
     "--device_ids 0 3 names a GPU it does not have; pass ids between 0 and 1"),
    ({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "2"}, [], "process 2 of this machine needs GPU 2"),
])
def test_a_gpu_the_machine_lacks_is_one_sentence(env, argv, expected, tmp_path, monkeypatch):
    """On a 2-GPU machine (faked here: this check runs before any CUDA call), a missing GPU named by
    --device_ids or needed by a torchrun process ends in one sentence, not in a CUDA error."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as e:
        train.main(["--root_log_dir", str(tmp_path / "runs"), *argv])
    assert expected in str(e.value.code) and "\n" not in str(e.value.code)
    assert not (tmp_path / "runs").exists()


def test_device_ids_on_a_machine_without_a_gpu_is_one_sentence(tmp_path, monkeypatch):
    """`--device_ids 0 1 2 3` on a machine without CUDA trained on the CPU without a word."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        train.main(["--root_log_dir", str(tmp_path / "runs"), "--device_ids", "0", "1", "2", "3"])
    message = str(e.value.code)
    assert "has no CUDA GPU" in message and "--device_ids 0 1 2 3" in message and "\n" not in message
    assert not (tmp_path / "runs").exists()


def test_device_flag_of_the_scripts_names_the_gpus_there_are(monkeypatch):
    """evaluate.py's, sample.py's and bench.py's --device: a GPU that is not there is one sentence."""
    from runtime import UsageError, pick_device
    assert pick_device("cpu").type == "cpu"
    with pytest.raises(UsageError, match="is not a device"):
        pick_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError, match="has no CUDA GPU; pass --device cpu"):
        pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("cuda:1").index == 1
    with pytest.raises(UsageError, match="has 2 CUDA GPU\\(s\\); pass cuda:0 to cuda:1"):
        pick_device("cuda:2")


def test_train_data_without_test_data_is_one_sentence_not_a_test_on_training_scenes(tiny_data, tmp_path):
    """It scored the training scenes as 'held-out' (test metrics, final.json) without a word."""
    with pytest.raises(SystemExit) as e:
        train.main(["--train_data_dir", tiny_data[0], "--root_log_dir", str(tmp_path / "runs"), *TINY])
    assert "needs a --test_data_dir too" in str(e.value.code) and "\n" not in str(e.value.code)
    assert not (tmp_path / "runs").exists()


def test_init_from_starts_a_new_run_from_a_checkpoints_weights_and_a_flags_new_part_at_its_init(
        tiny_data, tmp_path):
    """--init_from: a new run (step 0, its own schedules) that starts from another run's weights, here with
    the render gate added (its gate at its initial values); weights of another model are refused in one
    sentence, and so is --init_from with --resume."""
    geometric = ["--representation", "geometric", "--r_dim", "32"]
    run(tiny_data, tmp_path, "a", "--gradient_steps", "2", *geometric)
    source = checkpoint.load(checkpoint.latest(tmp_path / "a" / "checkpoints"))
    tiny_lr = ["--mu_i", "1e-12", "--mu_f", "1e-12"]                  # one step that moves no weight visibly
    assert run(tiny_data, tmp_path, "b", "--gradient_steps", "1", *geometric, *tiny_lr, "--observation",
               "render_gate", "--init_from", checkpoint.latest(tmp_path / "a" / "checkpoints")) == 1
    started = checkpoint.load(checkpoint.latest(tmp_path / "b" / "checkpoints"))
    assert started["step"] == 1 and started["config"]["observation"] == "render_gate"
    assert all(torch.allclose(started["model"][k], w, atol=1e-8) for k, w in source["model"].items())
    # the new part as initialised
    assert torch.allclose(started["model"]["eta_g.gate.2.bias"], torch.tensor([-3.0]))
    with pytest.raises(checkpoint.CheckpointError, match="do not fit the model these flags make") as e:
        run(tiny_data, tmp_path, "c", "--gradient_steps", "1", "--representation", "geometric", "--r_dim",
            "48", "--init_from", checkpoint.latest(tmp_path / "a" / "checkpoints"))
    assert "\n" not in str(e.value)
    with pytest.raises(train.UsageError, match="give one of them"):
        run(tiny_data, tmp_path, "b", "--gradient_steps", "2", *geometric, "--resume",
            "--init_from", checkpoint.latest(tmp_path / "a" / "checkpoints"))


def test_the_paper_presets_schedules_reach_the_step_as_train_py_wires_them(tiny_data, tmp_path):
    """The learning rate the optimizer uses and the sigma of the loss at step 100,001 of the paper's preset:
    mu_t = 5e-5 + 4.5e-4 (1 - t / 1.6e6) and sigma_t = 0.7 + 1.3 (1 - t / 2e5), with t = 100,000 steps
    done (a run resumed there, so that train.py builds and restores them as it does for any run)."""
    run(tiny_data, tmp_path, "paper", "--gradient_steps", "1")
    state = checkpoint.load(checkpoint.latest(tmp_path / "paper" / "checkpoints"))
    t = 100_000
    state["step"] = t
    state["lr_schedule"]["last_epoch"] = t
    state["sigma_schedule"]["t"] = t
    state["beta_schedule"]["t"] = t
    # as a checkpoint at step t holds it
    state["optimizer"]["param_groups"][0]["lr"] = 5e-5 + 4.5e-4 * (1 - t / 1.6e6)
    later = tmp_path / "later" / "checkpoints"
    later.mkdir(parents=True)
    torch.save(state, later / checkpoint.NAME.format(t))
    run(tiny_data, tmp_path, "later", "--gradient_steps", str(t + 2), "--resume")
    with open(tmp_path / "later" / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert [row["step"] for row in rows] == [t + 1, t + 2]
    # the values after row["step"] - 1 steps
    for row in rows:
        done = row["step"] - 1
        assert row["lr"] == pytest.approx(5e-5 + 4.5e-4 * (1 - done / 1.6e6), rel=1e-9)   # 4.71875e-4 at t
        assert row["sigma"] == pytest.approx(0.7 + 1.3 * (1 - done / 2e5), rel=1e-9)      # 1.35 at t
        assert row["beta"] == 1.0


@contextlib.contextmanager
def conv_output_dtypes():
    """The dtypes of every Conv2d output in this process while inside: {True: those of forwards that
    autograd records (the training step), False: the others (test metrics, evaluate.py)}."""
    seen = {True: set(), False: set()}

    def record(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            seen[torch.is_grad_enabled()].add(output.dtype)
    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        yield seen
    finally:
        handle.remove()


def test_bfloat16_trains_and_evaluates_in_bfloat16_close_to_float32(tiny_data, tmp_path):
    """--dtype bfloat16 through train.py (autocast in the step and the test metrics) and evaluate.py: the
    model's convolutions compute in bfloat16, and the loss above its floor (at sigma 0.5 most of the loss)
    is within a bfloat16 rounding of float32's on the same steps and scenes, and not float32's to the bit."""
    import evaluate
    above, evaluated, dtypes = {}, {}, {}
    for dtype in ("float32", "bfloat16"):
        with conv_output_dtypes() as seen:
            run(tiny_data, tmp_path, dtype, "--gradient_steps", "2", "--dtype", dtype, "--sigma_i", "0.5",
                "--sigma_f", "0.5")
            evaluate.main(["--checkpoint", checkpoint.latest(tmp_path / dtype / "checkpoints"), "--data_dir",
                           tiny_data[1], "--dtype", dtype, "--out", str(tmp_path / f"{dtype}.json"),
                           "--no_progress"])
        dtypes[dtype] = seen
        with open(tmp_path / dtype / "metrics.jsonl") as f:
            rows = [json.loads(line) for line in f]
        above[dtype] = [r["loss"] - metrics.nll_floor(r["sigma"], (3, 64, 64)) for r in rows]
        with open(tmp_path / f"{dtype}.json") as f:
            m = json.load(f)
        evaluated[dtype] = m["neg_elbo"] - metrics.nll_floor(m["sigma"], (3, 64, 64))
    assert dtypes["float32"] == {True: {torch.float32}, False: {torch.float32}}
    # the step, tests, evaluate.py
    assert dtypes["bfloat16"] == {True: {torch.bfloat16}, False: {torch.bfloat16}}
    assert min(above["float32"]) > 1000                      # the part of the loss that the model decides
    assert above["bfloat16"] == pytest.approx(above["float32"], rel=5e-3)
    assert above["bfloat16"][0] != above["float32"][0]       # the same weights, rounded otherwise
    assert evaluated["bfloat16"] == pytest.approx(evaluated["float32"], rel=5e-3)
    assert evaluated["bfloat16"] != evaluated["float32"]
    with open(tmp_path / "float32.json") as f, open(tmp_path / "bfloat16.json") as g:
        exact, rounded = json.load(f), json.load(g)
    assert rounded["dtype"] == "bfloat16"
    assert rounded["mse_generation"] == pytest.approx(exact["mse_generation"], rel=0.1, abs=1e-3)


def test_compile_hands_the_training_model_to_torch_compile(tiny_data, tmp_path, monkeypatch):
    """train.py --compile trains through torch.compile's module (inductor itself is tested on a GQN against
    eager in tests/test_model.py); without the flag nothing is compiled."""
    compiled = []

    def fake_compile(module, **kwargs):
        compiled.append(module)
        return module
    monkeypatch.setattr(torch, "compile", fake_compile)
    assert run(tiny_data, tmp_path, "eager", "--gradient_steps", "1") == 1 and compiled == []
    assert run(tiny_data, tmp_path, "compiled", "--gradient_steps", "1", "--compile") == 1
    assert len(compiled) == 1 and compiled[0].config["L"] == 2
