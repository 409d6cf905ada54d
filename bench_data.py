"""Benchmarks of the data path; prints tables, asserts nothing.

(a) Converter: dataset/convert2torch.py's scenes/s on Shepard-Metzler-like TFRecords (15 views of
    64x64, a few thousand scenes in a few files, rendered by dataset/shepard_metzler.py --tfrecord)
    against the rate of merely reading and parsing the same files with tf.data
    (convert2torch.read_and_parse). Needs TensorFlow; skipped without it.
(b) Loader: scenes/s for batches of 36 scenes of 16 views each, the project's loader (shards read
    with pread, only the asked-for views decoded: gqn_dataset.SceneViews) against the original
    torch-gqn's way (one gzip'd torch.save file per scene, every view decoded with PIL, then the
    views sliced out). Two kinds of scene: 16 views of 64x64 (all views loaded) and mazes-like
    300 views of 84x84 (16 views loaded, resized to 64).

    python bench_data.py                      # both parts, data cached under data/bench_data
    python bench_data.py --part loader --loader_workers 0 2 --batches 8

The original's scene files are read here with gqn_dataset.load_legacy_scene (gzip + the restricted
unpickler), which does the original's work (gzip, unpickle) without running arbitrary pickles.
"""
import argparse
import gzip
import io
import os
import shutil
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

import gqn_dataset
from dataset import convert2torch, tfrecord

REPO = Path(__file__).resolve().parent
BATCH = 36                  # scenes per batch (the paper's B)
VIEWS_LOADED = 16           # views per scene in a loader batch
Scene = namedtuple("Scene", ["frames", "cameras"])      # the original converter's record, pickled as __main__.Scene


# ----------------------------------------------------------------------------- data

def render_tfrecords(folder, scenes, files, workers):
    """Shepard-Metzler-like TFRecords <folder>/tfrecord/shepard_metzler_5_parts/train/<i>-of-<files>.tfrecord,
    rendered once and then reused. Returns their paths."""
    train = folder / "tfrecord" / "shepard_metzler_5_parts" / "train"
    paths = sorted(train.glob("*.tfrecord")) if train.is_dir() else []
    if len(paths) != files or sum(1 for _ in _records(paths)) != scenes:
        shutil.rmtree(folder, ignore_errors=True)
        print(f"rendering {scenes} Shepard-Metzler scenes into {files} TFRecord files ...", flush=True)
        subprocess.run([sys.executable, str(REPO / "dataset" / "shepard_metzler.py"), "--out", str(folder),
                        "--parts", "5", "--train_scenes", str(scenes), "--test_scenes", "0", "--seed", "0",
                        "--tfrecord", "--files_per_split", str(files), "--workers", str(workers),
                        "--no_progress"], check=True, cwd=REPO)
        paths = sorted(train.glob("*.tfrecord"))
    return paths


def _records(paths):
    """Yields once per record of TFRecord files, from the framing alone (no TensorFlow)."""
    for path in paths:
        with open(path, "rb") as f:
            while True:
                head = f.read(12)
                if len(head) < 12:
                    break
                f.seek(int.from_bytes(head[:8], "little") + 4, os.SEEK_CUR)
                yield path


def random_jpeg(rng, size):
    pixels = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
    for _ in range(4):
        y, x = rng.integers(0, size * 3 // 4, 2)
        pixels[y:y + size // 4, x:x + size // 4] = rng.integers(64, 256, 3)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def loader_data(folder, name, scenes, views, size, workers):
    """<folder>/<name>/shards (the project's format) and <folder>/<name>/original ({i}.pt.gz, the
    original converter's format) holding the same scenes; made once and reused."""
    shards, original = folder / name / "shards", folder / name / "original"
    done = folder / name / "DONE"
    if done.exists() and done.read_text() == f"{scenes} {views} {size}":
        return shards, original
    shutil.rmtree(folder / name, ignore_errors=True)
    print(f"writing {scenes} scenes of {views} views of {size}x{size} for the loader benchmark ...", flush=True)
    if size == 64:                               # Shepard-Metzler frames from the project's renderer
        subprocess.run([sys.executable, str(REPO / "dataset" / "shepard_metzler.py"), "--out", str(folder / name / "render"),
                        "--parts", "5", "--views", str(views), "--train_scenes", str(scenes), "--test_scenes", "0",
                        "--seed", "1", "--workers", str(workers), "--no_progress"], check=True, cwd=REPO)
        os.replace(folder / name / "render" / "train", shards)
        shutil.rmtree(folder / name / "render")
    else:                                        # mazes-like: random boxes, PIL JPEGs
        rng = np.random.default_rng(0)
        cameras = lambda: rng.uniform(-1, 1, (views, 5)).astype(np.float32)   # noqa: E731
        gqn_dataset.write_split(shards, (([random_jpeg(rng, size) for _ in range(views)], cameras())
                                         for _ in range(scenes)), scenes_per_shard=max(1, scenes // 4))
    reader = gqn_dataset.open_split(shards)
    original.mkdir(parents=True)
    for i in range(len(reader)):
        raw = reader.read(i)
        frames = np.empty(len(raw.jpegs), dtype=object)
        frames[:] = raw.jpegs
        buffer = io.BytesIO()
        torch.save(Scene(frames, raw.cameras[None]), buffer, _use_new_zipfile_serialization=False)
        with gzip.open(original / f"{i}.pt.gz", "wb") as f:
            f.write(buffer.getvalue())
    done.write_text(f"{scenes} {views} {size}")
    return shards, original


# ----------------------------------------------------------------------------- (a) converter

def bench_converter(args):
    try:
        convert2torch._import_tensorflow()
    except convert2torch.ConversionError as err:
        print(f"(a) converter: skipped, {err}")
        return
    folder = Path(args.dir) / "sm5_tfrecord"
    paths = render_tfrecords(folder, args.scenes, args.files, args.render_workers)
    root = folder / "tfrecord"
    megabytes = sum(p.stat().st_size for p in paths) / 1e6
    rows = []

    convert2torch.read_and_parse(paths[:1])                              # warm up TF's graph functions
    start = time.perf_counter()
    n = convert2torch.read_and_parse(paths)
    seconds = time.perf_counter() - start
    read_rate = n / seconds
    rows.append(("tf.data read + parse only (baseline)", n, seconds, read_rate))

    # where the converter's time goes per scene, on one core: the decode check of every frame and
    # gqn_dataset.write_shard (which reads every frame's JPEG header once more)
    probe = _first_scenes(paths[0], 500)
    start = time.perf_counter()
    for frames, _ in probe:
        for jpeg in frames:
            convert2torch.check_frame(jpeg, 64)
    seconds = time.perf_counter() - start
    rows.append(("  part: PIL decode check of every frame, 1 core", len(probe), seconds, len(probe) / seconds))
    shard = Path(args.dir) / "probe.gqn"
    start = time.perf_counter()
    gqn_dataset.write_shard(shard, [frames for frames, _ in probe], np.stack([cameras for _, cameras in probe]))
    seconds = time.perf_counter() - start
    shard.unlink()
    rows.append(("  part: gqn_dataset.write_shard, 1 core", len(probe), seconds, len(probe) / seconds))

    for workers in args.converter_workers:
        out = Path(args.dir) / f"sm5_converted_w{workers}"
        shutil.rmtree(out, ignore_errors=True)
        (summary,), seconds = convert2torch.convert(root, "shepard_metzler_5_parts", ["train"], out,
                                                    workers=workers, progress=False)
        where = "in this process" if workers == 1 else "incl. starting the worker processes"
        rows.append((f"converter, --workers {workers} ({where})", summary["scenes"], seconds,
                     summary["scenes"] / seconds))
        shutil.rmtree(out, ignore_errors=True)
        if workers > 1:
            start_up = worker_start_seconds(Path(args.dir) / "start_up", probe[0], workers)
            rows.append((f"  the same less {start_up:.1f} s of worker start-up (a 1-scene run)", summary["scenes"],
                         seconds - start_up, summary["scenes"] / (seconds - start_up)))

    print(f"\n(a) converter on {n} Shepard-Metzler scenes (15 views, 64x64) in {len(paths)} TFRecord files, "
          f"{megabytes:.0f} MB; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    _table(["what", "scenes", "seconds", "scenes/s", "of read rate"],
           [(what, scenes, f"{s:.2f}", f"{rate:.0f}", f"{rate / read_rate:.2f}") for what, scenes, s, rate in rows])


def _first_scenes(path, count):
    """The first `count` scenes (frames, cameras) of a TFRecord file, read with dataset/tfrecord.py."""
    scenes = []
    for data in tfrecord.iter_tfrecord(path):
        scenes.append(tfrecord.decode_gqn_example(data))
        if len(scenes) == count:
            break
    return scenes


def worker_start_seconds(folder, scene, workers):
    """Seconds convert2torch takes for `workers` files of one scene each with --workers `workers`:
    about the time to start its worker processes (each imports TensorFlow and torch)."""
    train = folder / "shepard_metzler_5_parts" / "train"
    train.mkdir(parents=True, exist_ok=True)
    for i in range(1, workers + 1):
        tfrecord.write_tfrecord(train / tfrecord.tfrecord_name(i, workers), [tfrecord.encode_gqn_example(*scene)])
    _, seconds = convert2torch.convert(folder, "shepard_metzler_5_parts", ["train"], folder / "out",
                                       workers=workers, progress=False)
    shutil.rmtree(folder)
    return seconds


# ----------------------------------------------------------------------------- (b) loaders

class OriginalScenes(Dataset):
    """The original torch-gqn way: scene i is the file {i}.pt.gz; every view is decoded with PIL,
    resized to 64 and made a float tensor; item = (images float (S, 3, 64, 64), viewpoints (S, 7))."""

    def __init__(self, folder):
        self.paths = [os.path.join(folder, f"{i}.pt.gz") for i in range(len(os.listdir(folder)))]

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        frames, cameras = gqn_dataset.load_legacy_scene(self.paths[index])
        images = []
        for data in frames:
            image = Image.open(io.BytesIO(data))
            if image.size != (64, 64):
                image = image.resize((64, 64), Image.BILINEAR)
            images.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1))
        return torch.stack(images), torch.from_numpy(gqn_dataset.raw_to_viewpoint(cameras))


def time_batches(loader, batches, take):
    """Seconds for `batches` batches after one warm-up batch; take(batch) does the per-batch work."""
    iterator = iter(loader)
    take(next(iterator))
    start = time.perf_counter()
    for _ in range(batches):
        take(next(iterator))
    return time.perf_counter() - start


def bench_loaders(args):
    # one torch thread, as in DataLoader workers: with 2 threads on a busy 2-core machine, the collate's
    # torch.stack of a batch was measured at ~300 ms instead of ~1 ms (threads waiting for each other)
    torch.set_num_threads(1)
    kinds = [("16 views of 64x64 (Shepard-Metzler renderer), all 16 loaded", "sm16", 16, 64, args.loader_scenes),
             ("300 views of 84x84 (mazes-like), 16 loaded and resized", "maze300", 300, 84, args.maze_scenes)]
    for title, name, views, size, scenes in kinds:
        shards, original = loader_data(Path(args.dir), name, scenes, views, size, args.render_workers)
        rows = []
        for workers in args.loader_workers:
            batches = min(args.batches, scenes // BATCH - 1)
            rng = np.random.default_rng(0)

            def original_take(batch):                   # the original slices its views after decoding all
                images, viewpoints = batch
                idx = torch.from_numpy(rng.permutation(views)[:VIEWS_LOADED])
                return images[:, idx], viewpoints[:, idx]

            loader = DataLoader(OriginalScenes(original), batch_size=BATCH, shuffle=True, num_workers=workers,
                                generator=torch.Generator().manual_seed(0))
            seconds = time_batches(loader, batches, original_take)
            rows.append(("original: {i}.pt.gz per scene, decode all, slice", workers, batches, seconds))

            loader = gqn_dataset.make_eval_loader(shards, num_scenes=scenes, batch_size=BATCH,
                                                  num_context=VIEWS_LOADED - 1, seed=0, workers=workers)
            seconds = time_batches(loader, batches, lambda batch: batch[0].float().div_(255))
            rows.append(("project: shards, SceneViews (make_eval_loader)", workers, batches, seconds))

            loader = gqn_dataset.make_loader(shards, batch_size=BATCH, max_context=VIEWS_LOADED - 1, seed=0,
                                             workers=workers)
            seconds = time_batches(loader, batches, lambda batch: batch[0].float().div_(255))
            rows.append(("project: make_loader (training, M ~ U{1..15} + query)", workers, batches, seconds))
            del loader
        print(f"\n(b) loaders, batches of {BATCH} scenes: {title}; {scenes} scenes; "
              f"load average {os.getloadavg()[0]:.1f} at the end")
        _table(["loader", "workers", "batches", "seconds", "scenes/s"],
               [(what, w, b, f"{s:.2f}", f"{b * BATCH / s:.0f}") for what, w, b, s in rows])


# ----------------------------------------------------------------------------- output

def _table(header, rows):
    rows = [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)   # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    print(line(header))
    print(line(["-" * w for w in widths]))
    for row in rows:
        print(line(row))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Data-path benchmarks: converter and loaders (prints tables).")
    p.add_argument("--part", choices=["all", "converter", "loader"], default="all")
    p.add_argument("--dir", default=str(REPO / "data" / "bench_data"), help="where generated data is cached")
    p.add_argument("--scenes", type=int, default=4000, help="(a) Shepard-Metzler scenes in the TFRecords")
    p.add_argument("--files", type=int, default=4, help="(a) TFRecord files")
    p.add_argument("--converter_workers", type=int, nargs="+", default=[1, min(4, os.cpu_count() or 1)])
    p.add_argument("--loader_scenes", type=int, default=36 * 9, help="(b) scenes of 16 views")
    p.add_argument("--maze_scenes", type=int, default=36 * 4, help="(b) mazes-like scenes of 300 views")
    p.add_argument("--batches", type=int, default=8, help="(b) timed batches per loader (after one warm-up)")
    p.add_argument("--loader_workers", type=int, nargs="+", default=[0, 2], help="(b) DataLoader workers")
    p.add_argument("--render_workers", type=int, default=os.cpu_count() or 1)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.part in ("all", "converter"):
        bench_converter(args)
    if args.part in ("all", "loader"):
        bench_loaders(args)


if __name__ == "__main__":
    main()
