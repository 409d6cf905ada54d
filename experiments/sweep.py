"""The demo sweep: which training recipe makes a small GQN render the built-in scenes on a CPU.

Every configuration is `python train.py` with the shared flags (BASE) and its own, in its own log folder.
A finished run's row (from its final.json: 200 held-out scenes, 3 context views, generations sampled from
the prior; and its metrics.jsonl: wall-clock minutes of training) is recorded in experiments/results.jsonl,
the sweep's log, and the table in experiments/README.md is printed from that log (a test checks that the
two agree).

    python experiments/sweep.py --list                            # the configurations
    python experiments/sweep.py --run tower_s03 geo_demo_m3        # train these (skips finished ones)
    python experiments/sweep.py --record geo_demo_m3               # add a finished run's row to the log
    python experiments/sweep.py --table                           # the table of the log, as in
                                                                  # experiments/README.md

Runs go to runs/sweep/<name> (--root). Train one at a time: two at once share the cores, and the
minutes in the table would not compare. A row whose configuration used an option measured and removed
since names the commit it reproduces at ("reproduce at"); check that commit out to run it.
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN = os.path.join(os.path.dirname(HERE), "train.py")
RESULTS = os.path.join(HERE, "results.jsonl")
ROOMS_RESULTS = os.path.join(HERE, "rooms_results.jsonl")

# What every configuration shares: the demo's data and model size (L 4, shared core, broadcast, h 32,
# batch 16, 5-cube scenes, 4,000 training scenes, seed 0). The configurations add or override flags.
BASE = ["--layers", "4", "--shared_core", "true", "--upsample", "broadcast", "--h_dim", "32", "--z_dim", "3",
        "--batch_size", "16", "--builtin_parts", "5", "--builtin_train_scenes", "4000",
        "--builtin_test_scenes", "200", "--seed", "0", "--workers", "1", "--mu_i", "1e-3", "--mu_f", "3e-4",
        "--sigma_i", "2.0", "--save_interval", "400"]
TOWER = ["--representation", "tower", "--r_dim", "32"]
GEO = ["--representation", "geometric", "--r_dim", "32"]
CTX = ["--min_context", "2", "--max_context", "5"]
M3 = ["--min_context", "3", "--max_context", "3"]                         # the evaluation's 3 context views
SIGMA_03 = ["--sigma_i", "1.0", "--sigma_f", "0.3", "--sigma_n", "200"]    # the demo's pixel sigma schedule
# --preset demo before it trained on 3 views (geo_demo_m3)
GEO_DEMO = [*GEO, *CTX, "--gradient_steps", "400", "--mu_n", "750", "--log_interval", "100",
            "--save_interval", "200", *SIGMA_03]
# the 64x64 rendering, gated
FINE_GATE = ["--representation", "geometric_fine", "--r_dim", "96", "--observation", "render_gate"]
FINE_GATE_300 = [*GEO_DEMO, *M3, *FINE_GATE, "--gradient_steps", "300", "--save_interval", "300"]
BETA_03 = ["--beta_i", "0.3", "--beta_f", "1"]                            # the KL weight rising from 0.3


def at_batch(batch, log):
    """fine_demo_m3_gate_300_beta at another batch size: the steps and every schedule stretched by 16 / batch,
    so that each ends after the same number of scenes as at batch 16; a test every `log` steps."""
    def scaled(n):
        return str(round(n * 16 / batch))
    return [*FINE_GATE_300, *BETA_03, "--batch_size", str(batch), "--gradient_steps", scaled(300),
            "--save_interval", scaled(300), "--log_interval", str(log), "--sigma_n", scaled(200),
            "--beta_n", scaled(300), "--mu_n", scaled(750)]


def in_480(sigma_n, beta_n, *more):
    """The demo at batch 8 (at_batch(8)) in 480 steps with sigma over sigma_n and the KL weight over beta_n,
    the learning rate over 1,200 (the 600-step recipe's 1,500 x 0.8); a test every 160 steps."""
    return [*at_batch(8, 160), "--gradient_steps", "480", "--save_interval", "480", "--sigma_n", str(sigma_n),
            "--beta_n", str(beta_n), "--mu_n", "1200", *more]


def warm_start(checkpoint):
    """A new run of 2,000 steps from a checkpoint in the sweep's folder ({root}), the learning rate
    3e-4 -> 1e-4, sigma 0.3 and the KL weight 1 throughout, as where the long runs stopped."""
    return ["--init_from", "{root}/" + checkpoint, "--gradient_steps", "2000", "--save_interval", "250",
            "--mu_i", "3e-4", "--mu_f", "1e-4", "--mu_n", "2000", "--sigma_i", "0.3", "--beta_i", "1",
            "--beta_n", "1"]


# fine_long_warm_2000 ran from this checkpoint's copy exported to assets/gqn-sm5.pt, fine_long_warm_4000 from
# fine_long_warm_2000's (each the shipped checkpoint then): the same weights
SHIPPED_6000 = "fine_long_m3_gate_b8/checkpoints/ckpt-00006000.pt"


def steps(n, log=100):
    return ["--gradient_steps", str(n), "--mu_n", str(n), "--log_interval", str(log)]


# name -> (flags after BASE, what it tests)
CONFIGS = {
    "pyramid_s07": (["--representation", "pyramid", "--r_dim", "128", *CTX, *steps(600), "--sigma_f", "0.7",
                     "--sigma_n", "400"],
                    "pyramid r 128 (the old demo's model), sigma 2 -> 0.7 (paper's end) over 400"),
    "tower_s03": ([*TOWER, *CTX, *steps(600), "--sigma_f", "0.3", "--sigma_n", "300", "--eval_scenes", "100"],
                  "tower r 32, sigma 2 -> 0.3 over 300"),
    "tower_s1-03_800": ([*TOWER, *CTX, *steps(800, 200), "--sigma_i", "1.0", "--sigma_f", "0.3",
                         "--sigma_n", "200"],
                        "tower r 32, sigma 1.0 -> 0.3 over 200, 800 steps"),
    # the long runs: one thread each, side by side, stopped (SIGTERM: a checkpoint, no final.json) when the
    # session's time ran out; final.json then written by `evaluate.py --scenes 200 --out <run>/final.json`
    "long_s03": ([*TOWER, *CTX, *steps(7000, 250), "--sigma_f", "0.3", "--sigma_n", "1000",
                  "--save_interval", "500"],
                 "tower r 32, sigma 2 -> 0.3 over 1,000, lr 1e-3 -> 3e-4 over 7,000 (stopped early)"),
    "long_s05": ([*TOWER, *CTX, *steps(7000, 250), "--sigma_f", "0.5", "--sigma_n", "1000",
                  "--save_interval", "500"],
                 "as long_s03 with sigma 2 -> 0.5 (stopped early)"),
    "demo": ([*TOWER, *CTX, *steps(750, 250), "--sigma_i", "1.0", "--sigma_f", "0.3", "--sigma_n", "200"],
             "the tower demo (`--preset demo` before geo_demo): as tower_s1-03_800, 750 steps"),
    "long_r64_s04": (["--representation", "tower", "--r_dim", "64", *CTX, *steps(3000, 250),
                      "--sigma_i", "1.0", "--sigma_f", "0.4", "--sigma_n", "300", "--save_interval", "500"],
                     "tower r 64, sigma 1.0 -> 0.4 over 300, 3,000 steps, alone on the 2 cores"),
    # single levers on the demo, each alone on the 2 cores (minutes comparable with demo's)
    "demo_lr2e-3": ([*TOWER, *CTX, *steps(750, 250), "--sigma_i", "1.0", "--sigma_f", "0.3",
                     "--sigma_n", "200", "--mu_i", "2e-3", "--mu_f", "6e-4"],
                    "as demo, learning rate 2e-3 -> 6e-4"),
    "demo_s05": ([*TOWER, *CTX, *steps(750, 250), "--sigma_i", "1.0", "--sigma_f", "0.5", "--sigma_n", "200"],
                 "as demo, sigma 1.0 -> 0.5"),
    "demo_beta2": ([*TOWER, *CTX, *steps(750, 250), "--sigma_i", "1.0", "--sigma_f", "0.3",
                    "--sigma_n", "200", "--beta_i", "2", "--beta_f", "2", "--beta_n", "1"],
                   "as demo, KL weight 2 (more pressure on the posterior to stay near the prior)"),
    # the geometric representation (geometric.py; not the paper's), alone on the 2 cores
    "geo_500": ([*GEO, *CTX, "--gradient_steps", "500", "--mu_n", "750", "--log_interval", "100", *SIGMA_03],
                "the tower demo's recipe (750-step schedules) with the geometric representation, 500 steps"),
    "geo_500_beta3": ([*GEO, *CTX, "--gradient_steps", "500", "--mu_n", "750", "--log_interval", "100",
                       *SIGMA_03, "--beta_i", "3", "--beta_f", "3"],
                      "as geo_500, KL weight 3"),
    "geo_demo": (GEO_DEMO,
                 "the demo preset before geo_demo_m3: as geo_500, 400 steps "
                 "(from a fresh clone: 8 min 45 s all told)"),
    "geo_b8_800": ([*GEO_DEMO, "--batch_size", "8", "--gradient_steps", "800", "--mu_n", "1500",
                    "--log_interval", "200", "--save_interval", "400", "--sigma_n", "400"],
                   "as geo_demo with batch 8 and twice the steps (the same scenes, the schedules in scenes)"),
    "geo_h64": ([*GEO_DEMO, "--h_dim", "64"],
                "as geo_demo with 64 hidden channels in the cores (a wider generator)"),
    "geo_demo_m3": ([*GEO_DEMO, *M3],
                    "the demo preset before the gate: as geo_demo, trained on exactly 3 context views, "
                    "the evaluation's number (fresh clone: 9 min 8 s)"),
    "geo_demo_s02": ([*GEO_DEMO, "--sigma_f", "0.2"], "as geo_demo, sigma 1.0 -> 0.2"),
    "geo_demo_m3_s02": ([*GEO_DEMO, *M3, "--sigma_f", "0.2"],
                        "as geo_demo_m3, sigma 1.0 -> 0.2"),
    "geo_demo_m3_mu400": ([*GEO_DEMO, *M3, "--mu_n", "400"],
                          "as geo_demo_m3, the learning rate down to 3e-4 by step 400 (not 750)"),
    "geo_demo_m3_sn100": ([*GEO_DEMO, *M3, "--sigma_n", "100"],
                          "as geo_demo_m3, sigma down to 0.3 by step 100 (not 200)"),
    "geo_demo_m3_gate": ([*GEO_DEMO, *M3, "--render_gate"],
                         "as geo_demo_m3, a learned per-pixel gate between the generator's output and the "
                         "representation's rendering (`--render_gate`)"),
    "fine_demo_m3_gate": ([*GEO_DEMO, *M3, *FINE_GATE],
                          "as geo_demo_m3_gate with geometric_fine's 64x64 rendering (r 96)"),
    "fine_demo_m3_gate_300": (FINE_GATE_300,
                              "as fine_demo_m3_gate, stopped at step 300 (the schedules as for 400)"),
    "fine_demo_m3_gate_300_s02": ([*FINE_GATE_300, "--sigma_f", "0.2"],
                                  "as fine_demo_m3_gate_300 with sigma 1.0 -> 0.2 (does z get used sooner?)"),
    "fine_demo_m3_gate_300_beta": ([*FINE_GATE_300, *BETA_03, "--beta_n", "300"],
                                   "`--preset demo` before batch 8 (fresh clone: 8 min 44 s): "
                                   "as fine_demo_m3_gate_300 with the KL weight rising from 0.3 to 1 "
                                   "over the 300 steps"),
    "fine_demo_m3_gate_b8_600": (at_batch(8, 200),
                                 "`--preset demo` now: fine_demo_m3_gate_300_beta at batch 8 "
                                 "for twice the steps (the same scenes; the schedules per scene seen)"),
    "fine_demo_m3_gate_b4_1200": (at_batch(4, 400),
                                  "as fine_demo_m3_gate_b8_600 at batch 4 for 1,200 steps"),
    "fine_demo_m3_gate_b6_800": (at_batch(6, 200),
                                 "as fine_demo_m3_gate_b8_600 at batch 6 for 800 steps"),
    "fine_demo": ([*GEO_DEMO, "--representation", "geometric_fine", "--r_dim", "96"],
                  "as geo_demo, rendering the query view at 64x64 "
                  "(GeometricFine; r 96: 64 rendered + 32 learned)"),
    # the shipped checkpoint (assets/gqn-sm5.pt) until geo_long_m3; it shared the cores with test runs for
    # part of its time
    "geo_long": ([*GEO, *CTX, "--gradient_steps", "3500", "--mu_f", "1e-4", "--mu_n", "3500", *SIGMA_03,
                  "--log_interval", "250", "--save_interval", "250"],
                 "geometric, 3,500 steps, lr 1e-3 -> 1e-4 (the shipped checkpoint until geo_long_m3)"),
    # the shipped checkpoint; the same as `python train.py --preset demo --representation geometric
    # --r_dim 32 --observation eta_g --beta_i 1 --batch_size 16 --sigma_n 200 --gradient_steps 6000
    # --mu_f 1e-4 --mu_n 6000 --log_interval 250 --save_interval 250`
    "geo_long_m3": ([*GEO, *M3, "--gradient_steps", "6000", "--mu_f", "1e-4",
                     "--mu_n", "6000", *SIGMA_03, "--log_interval", "250", "--save_interval", "250"],
                    "as geo_long on exactly 3 context views (the demo preset's recipe), 6,000 steps "
                    "(the shipped checkpoint until fine_long_m3_gate_b8)"),
    # does a wider generator pay later in training? The same 1,000-step recipe with 32 and 64 hidden channels
    "geo_m3_1000": ([*GEO, *M3, "--gradient_steps", "1000", "--mu_f", "1e-4", "--mu_n", "1000", *SIGMA_03,
                     "--log_interval", "250", "--save_interval", "500"],
                    "geo_long_m3's recipe in 1,000 steps (lr 1e-3 -> 1e-4 over them)"),
    "geo_m3_h64_1000": ([*GEO, *M3, "--gradient_steps", "1000", "--mu_f", "1e-4", "--mu_n", "1000", *SIGMA_03,
                         "--log_interval", "250", "--save_interval", "500", "--h_dim", "64"],
                        "as geo_m3_1000 with 64 hidden channels in the cores (a wider generator)"),
    # the gate between the generator and the 64x64 rendering, trained longer (the recipe of geo_long_m3, half
    # its steps)
    "fine_long_m3_gate": ([*GEO, *M3, *FINE_GATE, "--gradient_steps", "3000", "--mu_f", "1e-4",
                           "--mu_n", "3000", *SIGMA_03, "--log_interval", "250", "--save_interval", "250"],
                          "as fine_demo_m3_gate with geo_long_m3's recipe in 3,000 steps "
                          "(lr 1e-3 -> 1e-4 over them)"),
    # the demo's recipe at batch 8 trained long, as fine_long_m3_gate (the same scenes) in twice its steps;
    # it was paused (SIGSTOP) and resumed twice: its metrics.jsonl's seconds were made its training time by
    # hand (the pauses taken out, the parts added up, as train.py now logs a resumed run)
    "fine_long_m3_gate_b8": ([*at_batch(8, 500), "--gradient_steps", "6000", "--mu_f", "1e-4",
                              "--mu_n", "6000", "--save_interval", "500"],
                             "the demo preset (batch 8) with lr 1e-3 -> 1e-4 over 6,000 steps "
                             "(the shipped checkpoint)"),
    # L, the number of generation steps (the paper's 12; every run above 4, with one shared core): the demo
    # preset's model at batch 8 for 1,500 steps (lr 1e-3 -> 1e-4 over them) with L 4 and with L 8
    "fine_b8_1500": ([*at_batch(8, 250), "--gradient_steps", "1500", "--mu_f", "1e-4", "--mu_n", "1500",
                      "--save_interval", "500"],
                     "the demo preset (batch 8, L 4) for 1,500 steps, lr 1e-3 -> 1e-4 over them"),
    "fine_b8_1500_L8": ([*at_batch(8, 250), "--gradient_steps", "1500", "--mu_f", "1e-4", "--mu_n", "1500",
                         "--save_interval", "500", "--layers", "8"],
                        "as fine_b8_1500 with L 8 generation steps (the shared core run twice as often)"),
    # the long runs gained most while the learning rate fell: the demo with its rate falling to 1e-4 within
    # its own 600 steps (the preset: 1e-3 -> 3e-4 over 1,500, so it ends at about 7.2e-4)
    "fine_demo_b8_600_mu1e-4": ([*at_batch(8, 200), "--mu_f", "1e-4", "--mu_n", "600"],
                                "the demo preset with the learning rate 1e-3 -> 1e-4 over its 600 steps"),
    # how much of a difference between two rows is the training seed's (initialisation, shuffling, noise)? The
    # demo preset with two other seeds; evaluated, as every row, on seed 0's context and query views
    # (`evaluate.py --checkpoint <run>/checkpoints/ckpt-00000600.pt --scenes 200 --out <run>/final.json`)
    "fine_demo_m3_gate_b8_600_seed1": ([*at_batch(8, 200), "--seed", "1"],
                                       "fine_demo_m3_gate_b8_600 with training seed 1"),
    "fine_demo_m3_gate_b8_600_seed2": ([*at_batch(8, 200), "--seed", "2"],
                                       "fine_demo_m3_gate_b8_600 with training seed 2"),
    # the demo in fewer minutes: the machine's speed varies from day to day, and on a slower day the preset's
    # 600 steps took the demo past its 10 minutes; 480 steps with every schedule shortened alike (x 0.8)
    "fine_demo_b8_480": (in_480(320, 480),
                         "the demo preset in 480 steps, every schedule x 0.8 "
                         "(sigma over 320, KL weight over 480, lr over 1,200)"),
    # fine_demo_b8_480's colour error rose in its last steps as z came into use (on the logged scenes, from
    # step 320 to 480, as the 600-step preset's did from step 400 to 600): the same 480 steps with sigma
    # and the KL weight reaching their ends sooner, so that z comes into use with steps to spare
    "fine_demo_b8_480_early": (in_480(240, 360),
                               "as fine_demo_b8_480 with sigma over 240 steps and the KL weight over 360"),
    "fine_demo_b8_480_s240": (in_480(240, 480),
                              "as fine_demo_b8_480 with sigma over 240 steps (the KL weight over all 480)"),
    # the preset now with another training seed (evaluated on seed 0's views, as the seed rows above)
    "fine_demo_b8_480_s240_seed1": (in_480(240, 480, "--seed", "1"),
                                    "fine_demo_b8_480_s240 with training seed 1"),
    # seed 1 left z unused in the preset's 480 steps: does a KL weight starting lower (0.1) bring it in?
    "fine_demo_b8_480_s240_b01_seed1": (in_480(240, 480, "--beta_i", "0.1", "--seed", "1"),
                                        "fine_demo_b8_480_s240_seed1 with the KL weight rising from 0.1"),
    # the shipped checkpoint (fine_long_m3_gate_b8) trained 2,000 more steps from its weights (`--init_from`),
    # the learning rate 3e-4 -> 1e-4, sigma 0.3 and the KL weight 1 throughout, as where it stopped
    "fine_long_warm_2000": ([*at_batch(8, 250), *warm_start(SHIPPED_6000)],
                            "the shipped checkpoint, 2,000 more steps at lr 3e-4 -> 1e-4 "
                            "(fine_long_frustum_2000's control)"),
    # a second such cycle, from fine_long_warm_2000's weights
    "fine_long_warm_4000": ([*at_batch(8, 250),
                             *warm_start("fine_long_warm_2000/checkpoints/ckpt-00002000.pt")],
                            "fine_long_warm_2000, 2,000 more steps at lr 3e-4 -> 1e-4 again "
                            "(a second cycle)"),
    # ran as `--resume` of geo_long_m3 with --gradient_steps 11000, stopped by SIGTERM after step 7,500 and
    # evaluated with `evaluate.py --checkpoint .../ckpt-00007500.pt --scenes 200 --out <run>/final.json`;
    # the learning rate schedule does not depend on --gradient_steps, so these flags take the same 7,500
    # steps (up to the floating-point rounding of the geometric representation's later layout change)
    "geo_long_m3_7500": ([*GEO, *M3, "--gradient_steps", "7500", "--mu_f", "1e-4",
                          "--mu_n", "6000", *SIGMA_03, "--log_interval", "250", "--save_interval", "250"],
                         "geo_long_m3 continued at its final learning rate 1e-4 (`--resume`) to step 7,500, "
                         "then stopped"),
}


# The rooms sweep: the paper's networks (tower or pool representation, the paper's cores) on the built-in
# rooms (dataset/rooms.py). Every configuration is `train.py --preset rooms` with its own flags; the rows
# are scored against the better of the two 3D-blind baselines (mean and nearest context view) and by region.
ROOMS_BASE = ["--preset", "rooms"]
ROOMS_CONFIGS = {
    "rooms_tower_r32_1200": (["--sigma_i", "1.0", "--sigma_f", "0.3", "--sigma_n", "600"],
                             "`--preset rooms` as first written: tower r 32, L 4 shared, h 32, batch 16, "
                             "exactly 3 context views, sigma 1.0 -> 0.3 over 600, "
                             "lr 1e-3 -> 3e-4 over 1,500"),
    "rooms_tower_s07": (["--sigma_i", "2.0", "--sigma_f", "0.7", "--sigma_n", "600"],
                        "as rooms_tower_r32_1200 with the paper's sigma, 2.0 -> 0.7 (over 600 steps, "
                        "not 2e5): z dearer against the pixels, so that the generator leans on r"),
    "rooms_tower_paper_sigma": ([],
                                "as rooms_tower_r32_1200 with the paper's sigma schedule as it is "
                                "(2.0 -> 0.7 over 2e5 steps: about 2.0 throughout these steps; "
                                "--preset rooms now)"),
    "rooms_tower_paper_sigma_b8": (["--batch_size", "8",
                                    "--gradient_steps", "2400", "--mu_n", "3000", "--save_interval", "800",
                                    "--log_interval", "400"],
                                   "rooms_tower_paper_sigma at batch 8 for twice the steps "
                                   "(the same scenes seen)"),
    "rooms_tower_anneal": (["--mu_f", "1e-4", "--mu_n", "1200"],
                           "rooms_tower_paper_sigma with the learning rate annealed within its steps, "
                           "1e-3 -> 1e-4 over 1,200 (not 1e-3 -> 3e-4 over 1,500, 4.4e-4 at its end)"),
    "rooms_tower_long": (["--data_root", "data/rooms20k", "--builtin_train_scenes", "20000",
                          "--gradient_steps", "11000", "--mu_f", "1e-4", "--mu_n", "11000",
                          "--log_interval", "1000", "--save_interval", "1000", "--keep", "20"],
                         "the shipped `assets/gqn-rooms.pt`: `--preset rooms` for 11,000 steps "
                         "on 20,000 rooms, lr 1e-3 -> 1e-4 over them"),
}


def configuration(name):
    """(the flags every run of its sweep shares, its own flags, what it tests) of a configuration."""
    if name in ROOMS_CONFIGS:
        return (ROOMS_BASE, *ROOMS_CONFIGS[name])
    return (BASE, *CONFIGS[name])


def run(name, root, extra=()):
    base, flags, _ = configuration(name)
    flags = [flag.replace("{root}", root) for flag in flags]
    out = os.path.join(root, name)
    if os.path.exists(os.path.join(out, "final.json")):
        print(f"{name}: finished already ({out})")
        return
    stopped = os.path.isdir(os.path.join(out, "checkpoints")) and os.listdir(os.path.join(out, "checkpoints"))
    # the checkpoints hold the weights now; --resume refuses --init_from
    if stopped and "--init_from" in flags:
        i = flags.index("--init_from")
        flags = flags[:i] + flags[i + 2:]
    cmd = [sys.executable, TRAIN, *base, *flags, "--root_log_dir", root, "--log_dir", name, *extra,
           *(["--resume"] if stopped else [])]                  # a run stopped part way goes on
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def summary(name, root):
    """The row of a finished run (final.json and metrics.jsonl in root/name), or None."""
    out = os.path.join(root, name)
    try:
        with open(os.path.join(out, "final.json")) as f:
            final = json.load(f)
        with open(os.path.join(out, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return None
    # evaluate.py's final.json names its checkpoint's step
    step = final.get("step") or rows[-1]["step"]
    seconds = max(r["seconds"] for r in rows if r["step"] <= step)
    if name in ROOMS_CONFIGS:
        better = min(final["mse_mean_context"], final["mse_nearest_context"])
        return dict(name=name, label=f"`{name}`: {ROOMS_CONFIGS[name][1]}", steps=step,
                    minutes=round(seconds / 60, 1), scenes=final["scenes"], mse=final["mse_generation"],
                    mse_ratio=final["mse_generation"] / better,
                    object_iou=final["object_iou_generation"],
                    object_iou_baseline=max(final["object_iou_mean_context"],
                                            final["object_iou_nearest_context"]),
                    wall_error=final["wall_error_generation"], floor_error=final["floor_error_generation"],
                    object_error=final["object_error_generation"], kl=final["kl"],
                    rec_ratio=final["mse_reconstruction"] / better,
                    object_iou_rec=final["object_iou_reconstruction"])
    return dict(name=name, label=f"`{name}`: {CONFIGS[name][1]}", steps=step, minutes=round(seconds / 60, 1),
                scenes=final["scenes"], mse=final["mse_generation"],
                mse_ratio=final["mse_generation"] / final["mse_mean_context"], iou=final["iou_generation"],
                colour=final["colour_error_generation"], kl=final["kl"], iou_rec=final["iou_reconstruction"],
                colour_rec=final["colour_error_reconstruction"], reproduce_at=None)


def rooms_table(rows):
    """The markdown table of the rooms sweep's log."""
    lines = ["| configuration | steps | minutes | held-out scenes | generation MSE (x the better baseline) "
             "| object IoU (better baseline) | wall / floor / object colour error | KL (nats) "
             "| reconstruction MSE (x) / object IoU |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['steps']} | {r['minutes']:.1f} | {r['scenes']} "
                     f"| {r['mse']:.5f} ({r['mse_ratio']:.2f}x) "
                     f"| {r['object_iou']:.3f} ({r['object_iou_baseline']:.3f}) | {r['wall_error']:.3f} / "
                     f"{r['floor_error']:.3f} / {r['object_error']:.3f} | {r['kl']:.1f} "
                     f"| {r['rec_ratio']:.2f}x / {r['object_iou_rec']:.3f} |")
    return "\n".join(lines)


def read_results(path=RESULTS):
    """The sweep's log: one row per recorded run, in the order recorded."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def removed_configurations(rows):
    """Configuration name -> the commit it reproduces at, for rows that used an option removed since."""
    return {row["name"]: row["reproduce_at"] for row in rows if row["reproduce_at"]}


def format_row(row):
    def number(value, digits):
        return "-" if value is None else f"{value:.{digits}f}"
    minutes = row["minutes"] if isinstance(row["minutes"], str) else f"{row['minutes']:.1f}"
    mse = "-" if row["mse"] is None else f"{row['mse']:.5f} ({row['mse_ratio']:.2f}x)"
    rec = "-" if row["iou_rec"] is None else f"{row['iou_rec']:.3f} / {row['colour_rec']:.3f}"
    return (f"| {row['label']} | {row['steps']} | {minutes} | {row['scenes'] or '-'} | {mse} "
            f"| {number(row['iou'], 3)} | {number(row['colour'], 3)} | {number(row['kl'], 1)} | {rec} "
            f"| {row['reproduce_at'] or 'now'} |")


def table(rows):
    """The markdown table of the log's rows, as experiments/README.md holds it."""
    lines = ["| configuration | steps | minutes | held-out scenes | generation MSE (x mean context) | IoU "
             "| colour error | KL (nats) | reconstruction IoU / colour | reproduce at |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    return "\n".join(lines + [format_row(row) for row in rows])


def record(name, root, path=None):
    """Append a finished run's row to its sweep's log."""
    path = path or (ROOMS_RESULTS if name in ROOMS_CONFIGS else RESULTS)
    row = summary(name, root)
    if row is None:
        sys.exit(f"error: {os.path.join(root, name)} holds no finished run (final.json and metrics.jsonl); "
                 f"train it with --run {name} first")
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(rooms_table([row]).splitlines()[-1] if name in ROOMS_CONFIGS else format_row(row))


def main(argv=None):
    p = argparse.ArgumentParser(description="Train and tabulate the demo sweep's and the rooms sweep's "
                                            "configurations.")
    p.add_argument("--run", nargs="+", default=[], metavar="NAME", help="configurations to train (or 'all')")
    p.add_argument("--record", nargs="+", default=[], metavar="NAME",
                   help="add these finished runs' rows to the log")
    p.add_argument("--table", nargs="?", const="demo", choices=["demo", "rooms"],
                   help="print a sweep's table from its log (experiments/README.md's): demo (the default) "
                        "or rooms")
    p.add_argument("--list", action="store_true", help="list the configurations")
    p.add_argument("--root", default=os.path.join("runs", "sweep"), help="folder of the sweep's runs")
    args, extra = p.parse_known_args(argv)
    names = list(CONFIGS) + list(ROOMS_CONFIGS) if args.run == ["all"] else args.run
    removed = removed_configurations(read_results())
    for name in names + args.record:
        if name in removed:
            sys.exit(f"error: {name} used an option measured and removed since; it reproduces at commit "
                     f"{removed[name]} (git checkout {removed[name]}, then run it there)")
        if name not in CONFIGS and name not in ROOMS_CONFIGS:
            sys.exit(f"error: no configuration named {name}; see --list")
    if args.list:
        for name in list(CONFIGS) + list(ROOMS_CONFIGS):
            base, flags, what = configuration(name)
            print(f"{name:20s} {what}\n{'':20s} {' '.join(base + flags)}")
    for name in names:
        run(name, args.root, extra)
    for name in args.record:
        record(name, args.root)
    if args.table == "demo":
        print(table(read_results()))
    elif args.table == "rooms":
        print(rooms_table(read_results(ROOMS_RESULTS)))


if __name__ == "__main__":
    main()
