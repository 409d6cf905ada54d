"""How long until a GQN works: held-out generation and reconstruction MSE of a run's checkpoints against
training steps and minutes, beside the two 3D-blind baselines, as JSON and a PNG plot.

    python experiments/learning_curve.py --checkpoints runs/long/rooms_tower_long/checkpoints \\
        --run runs/long/rooms_tower_long \\
        --scenes 200 --json experiments/rooms_curve.json --out assets/rooms-learning-curve.png
    python experiments/learning_curve.py --json experiments/rooms_curve.json \\
        --out assets/rooms-learning-curve.png
    python experiments/learning_curve.py --json experiments/rooms_geometric_curve.json \\
        --beside experiments/rooms_curve.json --beside_label "the paper's tower" --out FIGURE.png

Each checkpoint (ckpt-<step>.pt in --checkpoints) is scored like `evaluate.py --scenes N --context 3`
on the test split it trained next to (or --data_dir): generations from the prior, reconstructions from
the posterior, the mean-context and nearest-context baselines, and with labels the object IoU. The
minutes of a step are the run's own clock (--run's metrics.jsonl: wall time of the training process,
its evaluations included). Without --checkpoints the plot is redrawn from --json. --beside draws another
run's generations (its --json) on the same axes of steps, labelled --beside_label. Pillow only.
"""

import argparse
import json
import math
import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import checkpoint  # noqa: E402
import gqn_dataset  # noqa: E402
import held_out  # noqa: E402
import metrics  # noqa: E402

SERIES = [  # (key in a point, legend, colour, dashed); drawn in this order, so generation lies on top
    ("mse_reconstruction", "reconstruction (posterior)", (255, 127, 14), False),
    ("mse_generation", "generation (prior)", (31, 119, 180), False),
    ("mse_mean_context", "mean of the context views", (120, 120, 120), True),
    ("mse_nearest_context", "nearest context view", (60, 60, 60), True),
]
KEPT = [key for key, *_ in SERIES] + ["object_iou_generation", "object_iou_mean_context",
                                      "object_iou_nearest_context",
                                      "wall_error_generation", "floor_error_generation", "kl"]


def run_seconds(run_dir):
    """step -> seconds since the run started, from run_dir/metrics.jsonl."""
    seconds = {}
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            seconds[row["step"]] = row["seconds"]
    return seconds


def score(path, data_dir, scenes, context, seed):
    """One checkpoint's held-out metrics (the KEPT ones) and its step."""
    opened = held_out.open_with_test_data(path, data_dir, context, "cpu", with_sigma=True)
    n = min(scenes, len(opened.dataset))
    loader = gqn_dataset.make_eval_loader(opened.data_dir, n, min(32, n), context, seed)
    values = metrics.evaluate(opened.model, loader, opened.sigma, "cpu", seed, progress=False,
                              labels=gqn_dataset.open_labels(opened.data_dir))
    return dict(step=opened.state["step"], **{k: values[k] for k in KEPT if k in values})


def nice_ticks(low, high, count=5):
    """Round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) covering [low, high], at most
    about count."""
    magnitude = 10 ** math.floor(math.log10((high - low) / count)) if high > low else 1
    step = next(f * magnitude for f in (1, 2, 2.5, 5, 10) if (high - low) / (f * magnitude) <= count)
    first = math.ceil(low / step - 1e-9)
    return [round(k * step, 10) for k in range(first, int(math.floor(high / step + 1e-9)) + 1)]


BESIDE_COLOUR = (44, 160, 44)


def plot(points, out, title, beside=(), beside_label=""):
    """Draw MSE against steps (and minutes, the second row of labels) with the baselines, and another run's
    generations (its points `beside`) where given; write out (PNG)."""
    width, height, left, right, top, bottom = 760 + (220 if beside else 0), 460, 80, 20, 40, 95
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13)
    steps = [p["step"] for p in list(points) + list(beside)]
    values = ([p[key] for p in points for key, *_ in SERIES if key in p]
              + [p["mse_generation"] for p in beside])
    x_max, y_max = max(steps), max(values) * 1.08
    y_min = min(0.0, min(values))

    def xy(step, value):
        return (left + (width - left - right) * step / x_max,
                top + (height - top - bottom) * (1 - (value - y_min) / (y_max - y_min)))

    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for value in nice_ticks(y_min, y_max):
        _, y = xy(0, value)
        draw.line([left, y, width - right, y], fill=(230, 230, 230))
        draw.text((left - 8, y), f"{value:g}", fill="black", font=font, anchor="rm")
    timed = sorted((p["step"], p["seconds"] / 60) for p in points if "seconds" in p)   # (step, minutes)
    for step in nice_ticks(0, x_max, 8):
        x, _ = xy(step, y_min)
        draw.line([x, height - bottom, x, height - bottom + 5], fill="black")
        draw.text((x, height - bottom + 8), f"{int(step):,}", fill="black", font=font, anchor="mt")
        if timed and timed[0][0] <= step <= timed[-1][0]:   # minutes between the scored steps, interpolated
            minutes = np.interp(step, [s for s, _ in timed], [m for _, m in timed])
            draw.text((x, height - bottom + 24), f"{minutes:.0f}", fill=(90, 90, 90), font=font, anchor="mt")
    draw.text(((left + width - right) / 2, height - bottom + 44),
              "training steps (grey: minutes on the run's machine)", fill="black", font=font, anchor="mt")
    draw.text((12, top - 22), "held-out MSE per pixel (lower is better)", fill="black", font=font)
    draw.text((width - right, top - 22), title, fill="black", font=font, anchor="ra")
    for i, (key, label, colour, dashed) in enumerate(SERIES):
        line = [xy(p["step"], p[key]) for p in points if key in p]
        if dashed:                          # a baseline: the same scenes at every step, one level
            value = next(p[key] for p in points if key in p)
            line = [xy(0, value), xy(x_max, value)]
            x0, y = line[0]
            for x in range(int(x0), int(line[1][0]), 12):
                draw.line([x, y, min(x + 6, line[1][0]), y], fill=colour, width=2)
        else:
            draw.line(line, fill=colour, width=2)
            for x, y in line:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        lx, ly = left + 10 + (i % 2) * 300, height - 30 + 16 * (i // 2)
        draw.line([lx, ly, lx + 24, ly], fill=colour, width=2)
        draw.text((lx + 30, ly), label, fill="black", font=font, anchor="lm")
    if beside:
        line = [xy(p["step"], p["mse_generation"]) for p in beside]
        draw.line(line, fill=BESIDE_COLOUR, width=2)
        for x, y in line:
            draw.rectangle([x - 3, y - 3, x + 3, y + 3], fill=BESIDE_COLOUR)
        lx, ly = left + 610, height - 30
        draw.line([lx, ly, lx + 24, ly], fill=BESIDE_COLOUR, width=2)
        draw.text((lx + 30, ly), f"{beside_label}: generation", fill="black", font=font, anchor="lm")
    image.save(out)


def main(argv=None):
    p = argparse.ArgumentParser(description="Held-out MSE of a run's checkpoints against steps and minutes, "
                                            "beside the baselines: JSON and a PNG plot.")
    p.add_argument("--checkpoints", default=None,
                   help="a folder of ckpt-<step>.pt to score (default: redraw --json)")
    p.add_argument("--run", default=None, help="the run's folder, for its clock (metrics.jsonl)")
    p.add_argument("--data_dir", default=None, help="test split (default: the one the run trained next to)")
    p.add_argument("--scenes", type=int, default=200)
    p.add_argument("--context", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", required=True,
                   help="the scored points (written with --checkpoints, read without)")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--title", default="", help="a title at the top right")
    p.add_argument("--beside", default=None, help="another run's scored points (its --json), drawn beside")
    p.add_argument("--beside_label", default="another run", help="the legend's name for --beside")
    args = p.parse_args(argv)
    try:
        curve(args)
    except (checkpoint.CheckpointError, gqn_dataset.DatasetError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


def curve(args):
    if args.checkpoints:
        paths = checkpoint.checkpoints(args.checkpoints)
        if not paths:
            sys.exit(f"error: no checkpoints (ckpt-<step>.pt) in {args.checkpoints}; "
                     f"pass the folder train.py wrote")
        seconds = run_seconds(args.run) if args.run else {}
        points = []
        for path in paths:
            point = score(path, args.data_dir, args.scenes, args.context, args.seed)
            if point["step"] in seconds:
                point["seconds"] = seconds[point["step"]]
            print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in point.items()}),
                  flush=True)
            points.append(point)
        with open(args.json, "w") as f:
            json.dump(dict(scenes=args.scenes, context=args.context, seed=args.seed, points=points), f,
                      indent=1)
    else:
        with open(args.json) as f:
            points = json.load(f)["points"]
    beside = ()
    if args.beside:
        with open(args.beside) as f:
            beside = json.load(f)["points"]
    plot(points, args.out, args.title, beside, args.beside_label)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
