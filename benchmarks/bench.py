"""Time the training step of a GQN configuration: this project's against the original formulation.

    python benchmarks/bench.py                     # default model, batch 4, 5 context views, fp32
    python benchmarks/bench.py --dtype bfloat16    # autocast bf16 (this project only; the original is fp32)
    python benchmarks/bench.py --shared_core true --steps 5
    python benchmarks/bench.py --batch_size 36 --device cuda --dtype bfloat16 --compile true

Each formulation runs in its own process (so peak memory is its own): after --warmup steps it times
--steps real training steps (forward, backward, Adam step: engine.train_step, the code train.py runs)
and reports the median ms/step, scenes/s and peak memory (RSS on CPU, max allocated on CUDA).
Utilisation = FLOPs of the ORIGINAL formulation for this configuration (counted once with
torch.utils.flop_counter on reference.PlainGQN, forward + backward) / time / the rate this machine
reaches on the dominant conv shape (the inference core's fused gate conv, forward + backward),
measured in the same run. So a number above 100 % means less work than the original, not a faster
machine. The data loader's scenes/s for the same batch shape is printed too. Nothing is asserted.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from torch.nn import functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)                                   # the project's modules, from any working directory


def make_model(impl, cfg, device):
    if impl == "original":
        from reference.plain_gqn import PlainGQN
        kw = {k: v for k, v in cfg.items() if k != "upsample"}
        return PlainGQN(**kw).to(device)
    from model import GQN
    return GQN(**cfg).to(device)


def synthetic_batch(batch_size, context, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (batch_size, context + 1, 3, 64, 64), dtype=torch.uint8, generator=g)
    viewpoints = torch.randn(batch_size, context + 1, 7, generator=g)
    return frames, viewpoints


def plain_step(model, optimizer, frames, viewpoints, sigma, device):
    """The original's training step: its forward returns only the ELBO."""
    from runtime import split_batch
    x, v, x_q, v_q = split_batch(frames, viewpoints, device)
    loss = -model(x, v, v_q, x_q, sigma).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(impl, cfg, batch_size, context, steps, warmup, device, dtype, compile_):
    """Run in a child process: median seconds per training step and peak memory in bytes."""
    from engine import make_optimizer, train_step
    from runtime import flush_denormals, keep_freed_memory
    if impl == "this":
        keep_freed_memory()  # as train.py does
        flush_denormals()
    torch.manual_seed(0)
    model = make_model(impl, cfg, device)
    frames, viewpoints = synthetic_batch(batch_size, context, device)
    if impl == "original":
        optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)   # as torch-gqn

        def step():
            return plain_step(model, optimizer, frames, viewpoints, 1.0, device)
    else:
        optimizer = make_optimizer(model, 5e-4)
        net = torch.compile(model) if compile_ else model

        def step():
            return train_step(net, optimizer, frames, viewpoints, 1.0, device, dtype)
    times = []
    for i in range(warmup + steps):
        sync(device)
        t = time.perf_counter()
        step()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return dict(seconds=statistics.median(times), peak_bytes=peak, all_seconds=times)


def not_in_original(cfg):
    """True for a representation torch-gqn's formulation cannot run (query-conditioned: geometric)."""
    from model import REPRESENTATIONS
    return getattr(REPRESENTATIONS[cfg["representation"]], "query_conditioned", False)


def original_flops(cfg, batch_size, context):
    """FLOPs of one forward + backward of the original formulation, counted on the meta device; for a
    representation the original does not have (geometric), this project's model's FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode
    from model import GQN
    from reference.plain_gqn import PlainGQN
    with torch.device("meta"):
        if not_in_original(cfg):
            model = GQN(**cfg)
        else:
            model = PlainGQN(**{k: v for k, v in cfg.items() if k != "upsample"})
        x = torch.rand(batch_size, context, 3, 64, 64)
        v = torch.rand(batch_size, context, 7)
        x_q, v_q = torch.rand(batch_size, 3, 64, 64), torch.rand(batch_size, 7)
    with FlopCounterMode(display=False) as counter:
        (-model(x, v, v_q, x_q, 1.0).mean()).backward()
    return counter.get_total_flops()


def conv_rate(cfg, batch_size, device, dtype, repeats=5):
    """FLOP/s of the dominant conv (the inference core's fused gate conv), forward + backward."""
    h, r, x_dim, v_dim = cfg["h_dim"], cfg["r_dim"], cfg["x_dim"], cfg["v_dim"]
    c_in, c_out, n = 2 * h + h + x_dim + v_dim + r, 4 * h, 16
    x = torch.randn(batch_size, c_in, n, n, device=device, requires_grad=True)
    w = torch.randn(c_out, c_in, 5, 5, device=device, requires_grad=True)
    times = []
    for i in range(repeats + 1):
        sync(device)
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=(dtype == "bfloat16")):
            y = F.conv2d(x, w, padding=2)
        y.float().sum().backward()
        sync(device)
        if i:
            times.append(time.perf_counter() - t)
    flops = 3 * 2 * batch_size * c_in * c_out * 25 * n * n
    return flops / statistics.median(times)


def loader_rate(batch_size, context, data_dir, batches=20, workers=2):
    """Scenes/s of the training loader for this batch shape (built-in or given data; else skipped)."""
    import gqn_dataset
    if data_dir is None:
        return None
    loader = gqn_dataset.make_loader(data_dir, batch_size, context, seed=0, workers=workers)
    it = iter(loader)
    next(it)
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batch_size * batches / (time.perf_counter() - t)


def parse_args(argv=None):
    from options import str2bool
    from model import OBSERVATION_HEADS, REPRESENTATIONS
    p = argparse.ArgumentParser(description="Time GQN training steps against the original formulation.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--representation", default="pool", choices=list(REPRESENTATIONS))
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--shared_core", type=str2bool, default=False)
    p.add_argument("--upsample", default="learned", choices=["learned", "broadcast"])
    p.add_argument("--h_dim", type=int, default=128)
    p.add_argument("--r_dim", type=int, default=256)
    p.add_argument("--observation", default="eta_g", choices=list(OBSERVATION_HEADS),
                   help="the observation head (train.py's --observation)")
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--context", type=int, default=5, help="context views M")
    p.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--compile", type=str2bool, default=False)
    p.add_argument("--impl", default="both", choices=["both", "original", "this"],
                   help="which formulation(s) to time")
    p.add_argument("--data_dir", default=None,
                   help="a split folder for the loader rate (default: built-in scenes if rendered)")
    p.add_argument("--elbo_check", type=int, default=0, metavar="STEPS",
                   help="instead of timing: train the demo preset STEPS steps in float32 and in bfloat16 "
                        "(same seed, built-in scenes) and compare their held-out -ELBO")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def config(args):
    cfg = dict(representation=args.representation, L=args.layers, shared_core=args.shared_core,
               upsample=args.upsample, x_dim=3, v_dim=7, r_dim=args.r_dim, h_dim=args.h_dim, z_dim=3,
               image_size=64)
    if args.observation != "eta_g":     # only when not the paper's: the original has no such argument
        cfg["observation"] = args.observation
    return cfg


def elbo_check(steps):
    """Same run in float32 and bfloat16: does bf16 training reach the same held-out ELBO?"""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("float32", "bfloat16"):
            # the demo's size with the pyramid's wider convs (r 128): bf16 is many times slower than
            # float32 on the 32-channel tower's convs on a CPU, and this check is about accuracy
            argv = ["--preset", "demo", "--representation", "pyramid", "--r_dim", "128", "--observation",
                    "eta_g", "--gradient_steps", str(steps), "--dtype", dtype,
                    "--root_log_dir", tmp, "--log_dir", dtype, "--save_interval", str(steps)]
            t = time.perf_counter()
            subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *argv], check=True)
            with open(os.path.join(tmp, dtype, "final.json")) as f:
                results[dtype] = (json.load(f), time.perf_counter() - t)
    print(f"\n{'dtype':9s} {'-ELBO':>10s} {'KL':>8s} {'MSE gen':>9s} {'seconds':>8s}")
    for dtype, (m, seconds) in results.items():
        print(f"{dtype:9s} {m['neg_elbo']:10.1f} {m['kl']:8.2f} {m['mse_generation']:9.5f} {seconds:8.0f}")
    a, b = results["float32"][0]["neg_elbo"], results["bfloat16"][0]["neg_elbo"]
    print(f"bfloat16 -ELBO differs from float32 by {100 * (b - a) / abs(a):+.2f} %")


def main(argv=None):
    args = parse_args(argv)
    if args.elbo_check:
        return elbo_check(args.elbo_check)
    from runtime import UsageError, pick_device
    cfg = config(args)
    try:
        device = pick_device(args.device)
    except UsageError as e:
        sys.exit(f"error: {e}")
    if args.child:  # one formulation, in this process, result as JSON on the last line
        dtype = "float32" if args.child == "original" else args.dtype
        out = time_steps(args.child, cfg, args.batch_size, args.context, args.steps, args.warmup, device,
                         dtype, args.compile)
        print(json.dumps(out))
        return
    if args.impl != "both" and args.upsample == "broadcast" and args.impl == "original":
        sys.exit("error: the original formulation has only learned upsampling; drop --upsample broadcast")
    impls = ["original", "this"] if args.impl == "both" else [args.impl]
    if args.upsample == "broadcast":
        impls = [i for i in impls if i != "original"]
    print(f"configuration: {cfg}, batch {args.batch_size}, context {args.context}, device {device}, "
          f"threads {torch.get_num_threads()}")
    flops = original_flops(cfg, args.batch_size, args.context)
    rate32 = conv_rate(cfg, args.batch_size, device, "float32")
    counted = "this project's model" if not_in_original(cfg) else "original formulation"
    print(f"{counted}: {flops / 1e12:.3f} TFLOP per step (forward + backward); "
          f"dominant conv: {rate32 / 1e9:.0f} GFLOP/s fp32", end="")
    rate16 = conv_rate(cfg, args.batch_size, device, "bfloat16") if args.dtype == "bfloat16" else None
    print(f", {rate16 / 1e9:.0f} GFLOP/s bf16" if rate16 else "")
    rows = []
    for impl in impls:
        dtype = "float32" if impl == "original" else args.dtype
        cmd = [sys.executable, os.path.abspath(__file__), "--child", impl] + \
            (argv if argv is not None else sys.argv[1:])
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            sys.exit(f"error: the {impl} run failed:\n{res.stderr[-2000:]}")
        out = json.loads(res.stdout.strip().splitlines()[-1])
        s = out["seconds"]
        rows.append((impl, dtype, s, out["peak_bytes"]))
    print(f"\n{'formulation':12s} {'dtype':9s} {'ms/step':>9s} {'scenes/s':>9s} {'util fp32':>10s} "
          f"{'peak mem':>10s} {'speed-up':>9s}")
    base = rows[0][2] if rows[0][0] == "original" else None
    for impl, dtype, s, peak in rows:
        util = flops / s / rate32
        speed = f"{base / s:8.2f}x" if base else "        -"
        print(f"{impl:12s} {dtype:9s} {s * 1e3:9.0f} {args.batch_size / s:9.2f} {100 * util:9.0f}% "
              f"{peak / 2**30:8.2f}GB {speed}")
    data_dir = args.data_dir or builtin_train_dir()
    rate = loader_rate(args.batch_size, args.context, data_dir)
    if rate:
        needed = args.batch_size / min(r[2] for r in rows)
        print(f"\ndata loader ({data_dir}, batch {args.batch_size}, {args.context + 1} views, 2 workers): "
              f"{rate:.0f} scenes/s; the fastest step above needs {needed:.1f}")
    else:
        print("\ndata loader: no data to read (render the built-in scenes or pass --data_dir)")


def builtin_train_dir():
    from dataset.shepard_metzler import builtin_root
    for parts in (5, 7):
        d = os.path.join(builtin_root("data", parts), "train")
        if os.path.isdir(d):
            return d
    return None


if __name__ == "__main__":
    main()
