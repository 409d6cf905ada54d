"""DistributedDataParallel under torchrun (gloo on CPU): two processes train like one."""

import contextlib
import os
import subprocess
import sys

import pytest
import torch

import checkpoint
import train
from conftest import ROOT, TINY_MODEL

TINY = [*TINY_MODEL, "--log_interval", "100", "--seed", "5", "--save_interval", "1", "--keep", "10"]

# Two processes sum the gradient in another order than one; Adam divides a near-zero gradient by its
# own magnitude, so a rounding difference of 1e-7 can move a weight by up to ~1e-5 (measured), far
# below one step of the learning rate (5e-4) that a real mismatch (another batch or noise) gives.
ADAM_ATOL = 5e-5


def torchrun(nproc, argv, tmp_path):
    """Run train.py under torchrun; every rank must exit cleanly. A rank that aborts at exit (a thread still
    working while the interpreter shuts down: SIGABRT, "terminate called ...") fails the run after it
    trained, as it would under Slurm."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           os.path.join(ROOT, "train.py"), *argv]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "terminate called" not in result.stderr, result.stderr[-3000:]
    return result


@contextlib.contextmanager
def one_thread():
    """torch on one thread, as each torchrun process is (OMP_NUM_THREADS=1), and back to the count it had."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def params_at(run_dir, step):
    path = os.path.join(run_dir, "checkpoints", checkpoint.NAME.format(step))
    return checkpoint.load(path)


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    train_dir, test_dir = tiny_data
    data = ["--train_data_dir", train_dir, "--test_data_dir", test_dir, "--root_log_dir", str(tmp)]
    with one_thread():
        train.train(train.parse_args([*data, "--log_dir", "one", "--gradient_steps", "4", *TINY]))
    torchrun(2, [*data, "--log_dir", "two", "--gradient_steps", "3", *TINY], tmp)
    first = {s: params_at(tmp / "two", s) for s in (1, 2, 3)}
    torchrun(2, [*data, "--log_dir", "two", "--gradient_steps", "4", "--resume", *TINY], tmp)
    return tmp, first


def test_two_processes_train_like_one_process_on_the_global_batch(runs):
    tmp, two = runs
    for step in (1, 2, 3):
        one = params_at(tmp / "one", step)
        assert two[step]["world_size"] == 2 and one["world_size"] == 1
        # rank 0 checked before saving that both ranks hold identical parameters (a checksum each)
        for k, t in one["model"].items():
            assert torch.allclose(two[step]["model"][k], t, rtol=1e-4, atol=ADAM_ATOL), (step, k)


def test_resume_under_two_processes_continues_at_the_right_step(runs):
    tmp, _ = runs
    resumed = params_at(tmp / "two", 4)
    assert resumed["step"] == 4 and resumed["world_size"] == 2
    one = params_at(tmp / "one", 4)
    for k, t in one["model"].items():
        assert torch.allclose(resumed["model"][k], t, rtol=1e-4, atol=ADAM_ATOL), k


def test_batch_that_does_not_divide_over_the_processes_is_refused(tiny_data, tmp_path):
    train_dir, _ = tiny_data
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(ROOT, "train.py"), "--train_data_dir", train_dir, "--batch_size", "3",
           "--root_log_dir", str(tmp_path)]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode != 0
    assert "--batch_size 3 does not divide over 2 processes" in result.stderr


def test_dataparallel_replicas_draw_the_noise_of_their_own_rows():
    """--device_ids 0 1 ...: nn.DataParallel splits a batch as tensor.chunk does, and every GPU's replica
    starts from the same seed; each must draw its own rows of the whole batch's noise (not all the same
    noise), as one process would. On a CPU the replica is faked with the rows of device index None."""
    from distributed import GlobalBatchNoise, data_parallel_rows
    for gpus, batch in (([0, 1], 36), ([0, 1, 2, 3], 10), ([2, 3, 5], 4)):
        parts = torch.arange(batch).chunk(len(gpus))
        rows = data_parallel_rows(gpus, batch)
        assert [(int(p[0]), int(p[-1]) + 1, batch) for p in parts] == [rows[g] for g in gpus[:len(parts)]]
    like = torch.zeros(2, 3, 16, 16)
    torch.manual_seed(7)
    whole = torch.randn(6, 3, 16, 16)
    for start in (0, 2, 4):
        noise = GlobalBatchNoise({None: (start, start + 2, 6), 0: (0, 2, 6)})
        torch.manual_seed(7)
        assert torch.equal(noise(like), whole[start:start + 2])
    torch.manual_seed(7)   # a device without rows, or rows past the batch: its own draw, as without noise
    own = torch.randn_like(like)
    for rows in ({0: (0, 2, 6)}, (5, 6, 6)):
        torch.manual_seed(7)
        assert torch.equal(GlobalBatchNoise(rows)(like), own)


def test_a_dataparallel_replica_keeps_bfloat16_in_its_own_thread():
    """DataParallel runs each replica in a thread that enters autocast without a dtype: CUDA's default,
    float16. Faked on a CPU with float16 there, the wrapped model still computes in bfloat16."""
    import threading
    from distributed import BFloat16Replica
    replica = BFloat16Replica(torch.nn.Linear(4, 4), "cpu")
    out = {}

    def worker():
        with torch.autocast("cpu", dtype=torch.float16):
            out["replica"] = replica(torch.ones(2, 4)).dtype
        with torch.autocast("cpu", dtype=torch.float16):
            out["plain"] = replica.module(torch.ones(2, 4)).dtype
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert out == {"plain": torch.float16, "replica": torch.bfloat16}


def test_a_signal_to_one_process_stops_every_process_and_saves(tiny_data, tmp_path):
    """Slurm may signal one node of a multi-node run only. The processes decide together, each step,
    whether to stop: all save and exit cleanly, instead of one waiting in a collective the others never
    reach (a hang until torchrun kills the job, and no checkpoint)."""
    import signal
    import time
    train_dir, test_dir = tiny_data
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(ROOT, "train.py"), "--train_data_dir", train_dir, "--test_data_dir", test_dir,
           "--root_log_dir", str(tmp_path), "--log_dir", "sig", *TINY, "--gradient_steps", "100000",
           "--save_interval", "100000"]
    run = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT), start_new_session=True)
    try:
        metrics = tmp_path / "sig" / "metrics.jsonl"
        deadline = time.time() + 120
        while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
            time.sleep(0.1)

        # the RANK torchrun gave a process of this run (its log folder is in its command line)
        def rank_of(pid):
            try:
                if str(tmp_path) not in open(f"/proc/{pid}/cmdline").read():
                    return None
                env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            except OSError:
                return None
            return next((e[5:].decode() for e in env if e.startswith(b"RANK=")), None)
        workers = [int(p) for p in os.listdir("/proc") if p.isdigit() and rank_of(p) == "1"]
        assert len(workers) == 1
        os.kill(workers[0], signal.SIGTERM)
        out, err = run.communicate(timeout=90)
    finally:  # a hang leaves no process behind
        try:
            os.killpg(run.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert run.returncode == 0, err[-2000:]
    assert "stopped by a signal to another process" in out
    assert checkpoint.load(checkpoint.latest(tmp_path / "sig" / "checkpoints"))["step"] >= 2


def test_without_seed_every_process_follows_the_one_seed_drawn(tiny_data, tmp_path):
    """Without --seed each process drew its own: different shuffles of the scenes (some scenes twice an
    epoch, some never) and a checkpoint that records only process 0's. Now process 0 draws it for all, so
    two processes train as one process with the seed the run records."""
    import json
    train_dir, test_dir = tiny_data
    data = ["--train_data_dir", train_dir, "--test_data_dir", test_dir, "--root_log_dir", str(tmp_path)]
    unseeded = [a for i, a in enumerate(TINY) if "--seed" not in TINY[max(i - 1, 0):i + 1]]
    torchrun(2, [*data, "--log_dir", "two", "--gradient_steps", "2", *unseeded], tmp_path)
    seed = json.loads((tmp_path / "two" / "args.json").read_text())["seed"]
    with one_thread():
        train.train(train.parse_args([*data, "--log_dir", "one", "--gradient_steps", "2", *unseeded,
                                      "--seed", str(seed)]))
    one, two = params_at(tmp_path / "one", 2), params_at(tmp_path / "two", 2)
    for k, t in one["model"].items():
        assert torch.allclose(two["model"][k], t, rtol=1e-4, atol=ADAM_ATOL), k


class _SceneLoss(torch.nn.Module):
    """A stand-in for the GQN with the same call: scene i's nll is (w * mean(x_q_i) - 1)^2, no kl."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, x, v, v_q, x_q, sigma, terms=False, noise=None):
        nll = (self.w * x_q.mean(dim=(1, 2, 3)) - 1) ** 2
        kl = torch.zeros_like(nll)
        return -nll, kl, nll


def _step_on_uneven_parts(rank, parts, rendezvous, out):
    """One train_step under DDP, process `rank` holding parts[rank] (its query images' values)."""
    from engine import train_step
    # Imported before the group exists, as distributed.Distributed does: imported by DDP's constructor
    # after it, it would hold the group and its gloo threads into the interpreter's shutdown (an abort).
    from torch.distributed.nn import functional  # noqa: F401
    torch.distributed.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    try:
        model = torch.nn.parallel.DistributedDataParallel(_SceneLoss())
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        frames = torch.tensor(parts[rank])[:, None, None, None, None].expand(-1, 2, 3, 2, 2).contiguous()
        values = train_step(model, optimizer, frames, torch.zeros(len(parts[rank]), 2, 7), 1.0,
                            torch.device("cpu"))
        if rank == 0:
            torch.save({"w": model.module.w.detach(), "loss": values[0]}, out)
        del model, optimizer          # the wrapper holds the group: freed here, its threads end in this call
    finally:
        torch.distributed.destroy_process_group()


def test_a_process_that_lost_scenes_weighs_each_remaining_scene_like_the_others(tmp_path):
    """With --skip_bad_scenes a process may train on fewer scenes than the others. The gradient (and the
    logged loss) must still be the mean over every scene of the global batch: DDP's plain average of the
    processes' means gave the one scene left on process 0 the weight of process 1's three together."""
    parts = [[0.2], [0.5, 0.6, 0.9]]
    out = tmp_path / "rank0.pt"
    torch.multiprocessing.spawn(_step_on_uneven_parts, args=(parts, str(tmp_path / "rendezvous"), str(out)),
                                nprocs=2)
    scenes = torch.tensor([m for part in parts for m in part])
    grad = (2 * (scenes - 1) * scenes).mean()      # d/dw of (w m - 1)^2 at w = 1, over all 4 scenes
    result = torch.load(out, weights_only=True)
    assert torch.allclose(result["w"], 1 - grad, atol=1e-6)
    assert result["loss"] == pytest.approx(((scenes - 1) ** 2).mean().item(), rel=1e-6)


def test_a_process_whose_part_of_the_batch_is_all_bad_scenes_makes_every_process_skip_the_step(tmp_path):
    """With --skip_bad_scenes, one scene per process and two bad scenes in eight, some steps leave a process
    with nothing to train on. Every process must skip those steps together (they decide in one all_reduce)
    instead of the others waiting in DDP's gradient all_reduce for a process that never reaches it."""
    import json
    from conftest import corrupt_one_frame, write_random_split
    train_dir = write_random_split(tmp_path / "train", scenes=8, views=6, seed=7, scenes_per_shard=8)
    test_dir = write_random_split(tmp_path / "test", scenes=4, views=6, seed=8)
    for scene in (1, 2):
        corrupt_one_frame(train_dir, scene=scene, view=0)
    steps = 12
    result = torchrun(2, ["--train_data_dir", train_dir, "--test_data_dir", test_dir,
                          "--root_log_dir", str(tmp_path),
                          "--log_dir", "bad", *TINY, "--batch_size", "2", "--gradient_steps", str(steps),
                          "--save_interval", "100", "--dataset", "Room", "--skip_bad_scenes"], tmp_path)
    left_out = [line for line in result.stdout.splitlines() if "scenes that failed their checks" in line]
    assert left_out and int(left_out[-1].split()[2]) > 0
    lines = (tmp_path / "bad" / "metrics.jsonl").read_text().splitlines()
    trained = [json.loads(line)["step"] for line in lines]
    assert 0 < len(trained) < steps                 # some steps trained, the all-bad ones skipped by both
    assert checkpoint.load(checkpoint.latest(tmp_path / "bad" / "checkpoints"))["step"] == steps


def _threads():
    names = []
    for path in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{path}/comm") as f:
            names.append(f.read().strip())
    return sorted(names)


def _train_then_list_threads(rank, port, argv, out):
    """Process `rank` of two: train.train as under torchrun, then the names of its threads still alive,
    and those alive once the exit's clean-up (distributed.release_collectives) has run."""
    import distributed
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    train.train(train.parse_args(argv))
    after_train = _threads()
    distributed.release_collectives()
    torch.save({"after train": after_train, "at exit": _threads()}, f"{out}-{rank}")


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="lists threads through /proc")
def test_a_rank_ends_its_process_group_and_its_threads_before_the_interpreter_shuts_down(tiny_data, tmp_path):
    """Under DDP a rank whose process group outlived train() aborted at exit, now and then, on a busy
    machine: gloo's worker threads were still alive at the interpreter's shutdown, and one that freed a
    collective's tensors then needed the interpreter (SIGABRT, "terminate called without an active
    exception"). When train() returns the group's worker threads have ended, and at exit (before the
    interpreter's shutdown) its transport's thread too."""
    import socket
    train_dir, test_dir = tiny_data
    argv = ["--train_data_dir", train_dir, "--test_data_dir", test_dir, "--root_log_dir", str(tmp_path),
            "--log_dir", "threads", *TINY, "--gradient_steps", "2"]
    with socket.socket() as s:  # a free port for the two processes' rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "threads")
    torch.multiprocessing.spawn(_train_then_list_threads, args=(port, argv, out), nprocs=2)
    for rank in (0, 1):
        names = torch.load(f"{out}-{rank}", weights_only=True)
        assert "pt_gloo_runloop" not in names["after train"], (rank, names)
        assert not [n for n in names["at exit"] if "gloo" in n], (rank, names)
