"""Never lose a run: kill -9 and resume, signals, non-finite losses, crafted files, bad scenes."""

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

import checkpoint
from dataset.shards import read_shard_header
import train
from conftest import ROOT, TINY_MODEL, RunsCode, corrupt_one_frame, write_random_split

TINY = [*TINY_MODEL, "--log_interval", "100", "--seed", "11"]


def argv(tiny_data, log_root, name, *extra):
    train_dir, test_dir = tiny_data
    return ["--train_data_dir", train_dir, "--test_data_dir", test_dir, "--root_log_dir", str(log_root),
            "--log_dir", name, *TINY, *extra]


def start(args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def losses(run_dir):
    """step -> loss from metrics.jsonl, where each step is logged once (a resumed run drops the rows of the
    steps it redoes)."""
    out = {}
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                assert row["step"] not in out, f"step {row['step']} logged twice"
                out[row["step"]] = row["loss"]
    return out


def logged_steps(run_dir):
    """How many steps metrics.jsonl holds so far (0 before it exists)."""
    try:
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            return f.read().count("\n")
    except FileNotFoundError:
        return 0


# The kill's moment comes from this seed; a failure prints it, and GQN_KILL_SEED=<seed> replays that moment.
KILL_SEED = int(os.environ.get("GQN_KILL_SEED", "2018"))


def test_kill_9_at_a_seeded_moment_then_resume_gives_the_same_run(tiny_data, tmp_path):
    steps = ["--gradient_steps", "12", "--save_interval", "3", "--keep", "2"]
    whole = start(argv(tiny_data, tmp_path, "whole", *steps))
    assert whole.wait(timeout=300) == 0, whole.stderr.read()[-2000:]

    # the victim is the same run asked for a million steps, so that however slow the machine it is still
    # training when the kill lands; the resumed run ends at the whole run's step 12. The moment: as soon as
    # step k is logged, k from 1 to 11 drawn with the seed; a run saves right after logging steps 3, 6 and
    # 9, so those moments fall in or next to a checkpoint's write
    after = random.Random(KILL_SEED).randint(1, 11)
    victim = start(argv(tiny_data, tmp_path, "killed", *steps[2:], "--gradient_steps", "1000000"))
    deadline = time.monotonic() + 300
    while logged_steps(tmp_path / "killed") < after and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    victim.send_signal(signal.SIGKILL)
    try:
        victim.wait(timeout=60)
    finally:
        if victim.poll() is None:       # the signal did not end it: end it here, and the wait above failed
            victim.kill()
            victim.wait()
    saved = checkpoint.latest(tmp_path / "killed" / "checkpoints")
    logged = logged_steps(tmp_path / "killed")
    print(f"GQN_KILL_SEED={KILL_SEED}: kill -9 once step {after} was logged; by then "
          f"{logged} steps were logged and the last checkpoint was {saved}")
    # killed mid-run (neither finished nor failed before the kill), not before step k, nor so late that it
    # saved past the whole run's end
    assert victim.returncode == -signal.SIGKILL, (victim.returncode, victim.stderr.read()[-2000:])
    assert logged >= after and (saved is None or checkpoint.step_of(saved) <= 12), (logged, saved)
    resume = ["--resume"] if saved else []
    again = start(argv(tiny_data, tmp_path, "killed", *steps, *resume))
    assert again.wait(timeout=300) == 0, again.stderr.read()[-2000:]

    assert losses(tmp_path / "killed") == losses(tmp_path / "whole")  # step for step, to the bit
    a = checkpoint.load(checkpoint.latest(tmp_path / "whole" / "checkpoints"))
    b = checkpoint.load(checkpoint.latest(tmp_path / "killed" / "checkpoints"))
    assert a["step"] == b["step"] == 12
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # never more than --keep checkpoints, and no temporary file left behind by the kill counts as one
    assert len(checkpoint.checkpoints(tmp_path / "killed" / "checkpoints")) <= 2


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_a_checkpoint_and_exits_cleanly(tiny_data, tmp_path, sig):
    run = start(argv(tiny_data, tmp_path, "sig", "--gradient_steps", "100000", "--save_interval", "100000"))
    metrics = tmp_path / "sig" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.1)
    run.send_signal(sig)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err[-2000:]
    assert f"stopped by {sig.name}" in out and "continue with --resume" in out
    path = checkpoint.latest(tmp_path / "sig" / "checkpoints")
    assert path and path in out
    assert checkpoint.load(path)["step"] >= 2


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_whole_process_group_saves_too(tiny_data, tmp_path, sig):
    """Slurm at its time limit, `pkill -f train.py` and Ctrl-C signal every process of the job, the
    DataLoader's workers included: the workers must leave it to the main process, which saves."""
    args = argv(tiny_data, tmp_path, "group", "--gradient_steps", "100000", "--save_interval", "100000")
    args[args.index("--workers") + 1] = "1"
    run = start(args, start_new_session=True)
    metrics = tmp_path / "group" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.1)
    os.killpg(run.pid, sig)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err[-2000:]
    assert f"stopped by {sig.name}" in out
    assert checkpoint.load(checkpoint.latest(tmp_path / "group" / "checkpoints"))["step"] >= 2


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
        tiny_data, tmp_path, monkeypatch):
    real = train.GQN.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kw):
        calls["n"] += 1
        elbo, kl, nll = real(self, *args, **kw)
        return (elbo * float("nan"), kl, nll) if calls["n"] == 3 else (elbo, kl, nll)

    monkeypatch.setattr(train.GQN, "forward", poisoned)
    with pytest.raises(train.TrainingError, match=r"step 3: the loss is nan.*last good checkpoint"):
        train.train(train.parse_args(argv(tiny_data, tmp_path, "nan", "--gradient_steps", "5",
                                          "--save_interval", "1")))
    assert os.path.basename(checkpoint.latest(tmp_path / "nan" / "checkpoints")) == "ckpt-00000002.pt"

    calls["n"] = 0
    steps = train.train(train.parse_args(argv(tiny_data, tmp_path, "skip", "--gradient_steps", "5",
                                              "--skip_nonfinite")))
    assert steps == 5
    state = checkpoint.load(checkpoint.latest(tmp_path / "skip" / "checkpoints"))
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    assert sorted(losses(tmp_path / "skip")) == [1, 2, 4, 5]  # step 3 skipped, not trained on


def test_a_finite_loss_with_a_nan_gradient_is_caught_before_it_reaches_the_weights(
        tiny_data, tmp_path, monkeypatch):
    """Only the loss was checked: a step whose loss is finite but whose gradient is not made every weight NaN,
    every later step was skipped (nothing saved or tested), and the last checkpoint was NaN."""
    real = train.GQN.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kw):
        calls["n"] += 1
        elbo, kl, nll = real(self, *args, **kw)
        if calls["n"] == 3:   # sqrt at 0: the value 0, the gradient inf * 0 = NaN
            nll = nll + torch.sqrt(self.eta_g.weight.sum() * 0)
        return elbo, kl, nll

    monkeypatch.setattr(train.GQN, "forward", poisoned)
    with pytest.raises(train.TrainingError, match=r"step 3: the loss is finite .* but its gradient is not"):
        train.train(train.parse_args(argv(tiny_data, tmp_path, "nan", "--gradient_steps", "5",
                                          "--save_interval", "1")))
    calls["n"] = 0
    assert train.train(train.parse_args(argv(tiny_data, tmp_path, "skip", "--gradient_steps", "5",
                                             "--skip_nonfinite", "--save_interval", "3"))) == 5
    saved = [checkpoint.load(p) for p in checkpoint.checkpoints(tmp_path / "skip" / "checkpoints")]
    assert [s["step"] for s in saved] == [3, 5]          # the skipped step's checkpoint is still written
    assert all(torch.isfinite(t).all() for s in saved for t in s["model"].values())
    assert sorted(losses(tmp_path / "skip")) == [1, 2, 4, 5]


def test_a_full_disk_while_saving_is_one_sentence_and_leaves_no_partial_file(
        tiny_data, tmp_path, monkeypatch):
    import errno
    real = checkpoint.torch.save
    calls = {"n": 0}

    def disk_fills(obj, f):
        calls["n"] += 1
        if calls["n"] == 2:
            f.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f)

    monkeypatch.setattr(checkpoint.torch, "save", disk_fills)
    with pytest.raises(SystemExit) as e:
        train.main(argv(tiny_data, tmp_path, "full", "--gradient_steps", "3", "--save_interval", "1"))
    message = str(e.value.code)
    assert "No space left on device" in message and "ckpt-00000001.pt" in message and "\n" not in message
    assert os.listdir(tmp_path / "full" / "checkpoints") == ["ckpt-00000001.pt"]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the crafted file itself
def test_crafted_pickle_as_a_checkpoint_is_refused_and_runs_nothing(tiny_data, tmp_path):
    marker = tmp_path / "marker"
    folder = tmp_path / "crafted" / "checkpoints"
    folder.mkdir(parents=True)
    for i, dump in enumerate([lambda o, f: pickle.dump(o, f), lambda o, f: torch.save(o, f)]):
        path = folder / checkpoint.NAME.format(i + 1)
        with open(path, "wb") as f:
            dump({"model": RunsCode(f"touch {marker}"), "config": {}}, f)
        with pytest.raises(checkpoint.CheckpointError, match="not a loadable checkpoint"):
            checkpoint.load(path)
    with pytest.raises(SystemExit) as e:  # and through train.py --resume
        train.main(argv(tiny_data, tmp_path, "crafted", "--gradient_steps", "1", "--resume"))
    assert "not a loadable checkpoint" in str(e.value.code) and "\n" not in str(e.value.code)
    assert not marker.exists()


def test_a_bad_scene_stops_the_run_in_one_sentence_or_is_skipped_and_counted(tmp_path):
    train_dir = write_random_split(tmp_path / "train", scenes=4, views=6, seed=3)
    test_dir = write_random_split(tmp_path / "test", scenes=4, views=6, seed=4)
    shard = corrupt_one_frame(train_dir, scene=1, view=0)
    data = ["--train_data_dir", train_dir, "--test_data_dir", test_dir, "--root_log_dir",
            str(tmp_path / "runs")]
    tiny = [a for a in TINY]
    with pytest.raises(SystemExit) as e:
        train.main([*data, "--log_dir", "stop", *tiny, "--gradient_steps", "30", "--dataset", "Room"])
    message = str(e.value.code)
    assert "\n" not in message and shard in message and "--skip_bad_scenes" in message
    steps = train.train(train.parse_args([*data, "--log_dir", "skip", *tiny, "--gradient_steps", "30",
                                          "--dataset", "Room", "--skip_bad_scenes"]))
    assert steps == 30


def test_zeroed_bytes_in_a_shards_image_data_stop_the_run_or_are_skipped_and_counted(tmp_path, capsys):
    """3 KB of zeros in the middle of the frames (a disk's damage; the JPEGs still parse): once trained
    on without a word, now refused by the views' checksums, or left out and counted."""
    train_dir = write_random_split(tmp_path / "train", scenes=8, views=6, seed=5, scenes_per_shard=8)
    test_dir = write_random_split(tmp_path / "test", scenes=4, views=6, seed=6)
    shard = os.path.join(train_dir, "shard-00000.gqn")
    header = read_shard_header(shard)
    middle = (header["blob_offset"] + header["file_size"]) // 2
    with open(shard, "r+b") as f:
        f.seek(middle)
        f.write(bytes(3072))
    data = ["--train_data_dir", train_dir, "--test_data_dir", test_dir, "--root_log_dir",
            str(tmp_path / "runs")]
    with pytest.raises(SystemExit) as e:
        train.main([*data, "--log_dir", "stop", *TINY, "--gradient_steps", "30", "--dataset", "Room"])
    message = str(e.value.code)
    assert "\n" not in message and shard in message and "does not match its checksum" in message
    assert "--skip_bad_scenes" in message
    # left out and counted, also when the scenes come from a worker process
    steps = train.train(train.parse_args([*data, "--log_dir", "skip", *TINY, "--gradient_steps", "30",
                                          "--dataset", "Room", "--skip_bad_scenes", "--workers", "1"]))
    assert steps == 30
    printed = capsys.readouterr().out.splitlines()
    left_out = [line for line in printed if "scenes that failed their checks" in line]
    assert left_out and int(left_out[-1].split()[2]) > 0


def test_an_unwritable_log_folder_is_one_sentence(tiny_data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as e:
        train.main(argv(tiny_data, blocker, "x", "--gradient_steps", "1"))
    assert "cannot write to the log folder" in str(e.value.code) and "\n" not in str(e.value.code)
