"""Evaluate a GQN on held-out scenes: -ELBO, KL, NLL, bits per dim, and the MSE / PSNR, object IoU, object
colour error and NLL above its sigma floor of its generations and reconstructions, next to three
baselines that know nothing of 3D.

    python evaluate.py --checkpoint runs/demo/checkpoints/ckpt-00002500.pt            # built-in test scenes
    python evaluate.py --checkpoint CKPT --data_dir /path/to/dataset/test --scenes 1000 --context 3

The baselines answer "does the model render the scene, or something cheaper?":
- black: an all-black image (what a GQN stuck at the background renders);
- mean context: the pixel-wise mean of the context views;
- nearest context: the context view whose camera position is nearest the query's.
The context and query views of each scene come from (--seed, scene) alone (gqn_dataset.FixedContextSampler,
the views sample.py shows too), and the model's noise of batch i from (--seed, i): the same checkpoint,
seed and batch size give the same numbers. -ELBO, KL and NLL are nats per scene (NLL under the pixel
sigma the checkpoint's run had reached, unless --sigma), bits per dim is -ELBO per colour value in bits,
and MSE / PSNR are per query image, averaged over the scenes. Prints a table (and a progress bar) and
writes JSON (default: <checkpoint>-eval.json next to the checkpoint).
"""

import argparse
import json
import os
import sys

import checkpoint
import gqn_dataset
import held_out
import metrics
from options import add_checkpoint_arguments, nonnegative_float, positive_float, positive_int
from runtime import UsageError, pick_device


def main(argv=None):
    p = argparse.ArgumentParser(description="Evaluate a GQN checkpoint on held-out scenes: -ELBO, KL, NLL, "
                                            "bits per dim, MSE and PSNR of generations, reconstructions "
                                            "and baselines.")
    add_checkpoint_arguments(p, "context views per scene (default 3)")
    p.add_argument("--eval_scenes", "--scenes", dest="scenes", type=positive_int, default=None, metavar="N",
                   help="number of scenes, the first of the split (default: all)")
    p.add_argument("--batch_size", type=positive_int, default=32,
                   help="scenes per batch (default 32; the noise is drawn per batch)")
    p.add_argument("--sigma", type=positive_float, default=None,
                   help="pixel sigma of the likelihood (default: the checkpoint's)")
    p.add_argument("--temperature", type=nonnegative_float, default=1.0,
                   help="scale of the prior's standard deviation for the generations (default 1: the model's "
                        "samples; 0: z at the prior's mean; below 1 departs from the paper)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="compute type (default float32)")
    p.add_argument("--out", default=None,
                   help="JSON file to write (default: <checkpoint>-eval.json next to it)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        device = pick_device(args.device)
        opened = held_out.open_with_test_data(args.checkpoint, args.data_dir, args.context, device,
                                                with_sigma=args.sigma is None)
        state, model, data_dir, dataset = opened.state, opened.model, opened.data_dir, opened.dataset
        sigma = args.sigma if args.sigma is not None else opened.sigma
        scenes = len(dataset) if args.scenes is None else min(args.scenes, len(dataset))
        if args.scenes is not None and args.scenes > len(dataset):
            print(f"note: {data_dir} holds {len(dataset)} scenes; evaluating all of them")
        labels = gqn_dataset.open_labels(data_dir)          # region metrics where the split has labels
        loader = gqn_dataset.make_eval_loader(data_dir, scenes, min(args.batch_size, scenes), args.context,
                                              args.seed)
    except (checkpoint.CheckpointError, gqn_dataset.DatasetError, UsageError) as e:
        sys.exit(f"error: {e}")
    print(f"{args.checkpoint} (step {state.get('step', '?')}): {scenes} scenes of {data_dir}, "
          f"{args.context} context views, sigma {sigma:.4g}, seed {args.seed}, on {device}"
          + (f", prior temperature {args.temperature:g}" if args.temperature != 1 else ""))
    values = metrics.evaluate(model, loader, sigma, device, args.seed, args.dtype,
                              progress=not args.no_progress, temperature=args.temperature, labels=labels)
    values.update(checkpoint=os.path.abspath(args.checkpoint), step=state.get("step"), config=state["config"],
                   data_dir=os.path.abspath(data_dir), context=args.context, seed=args.seed,
                   batch_size=min(args.batch_size, scenes), sigma=sigma, dtype=args.dtype,
                   temperature=args.temperature)
    print(metrics.format_table(values))
    out = args.out or os.path.splitext(args.checkpoint)[0] + "-eval.json"
    try:
        with open(out, "w") as f:
            json.dump(values, f, indent=2)
    except OSError as e:
        sys.exit(f"error: cannot write {out} ({e.strerror}); pass --out with a writable file")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
