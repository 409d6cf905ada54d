"""Benchmarks of the data path; prints tables, asserts nothing.

(a) Converter: dataset/convert2torch.py's scenes/s on Shepard-Metzler-like TFRecords (15 views of
    64x64, 8000 scenes in 8 files, rendered once by dataset/shepard_metzler.py --tfrecord) with its
    default check (JPEG structure) and with --full_check (every frame decoded), against the rate of
    merely reading and parsing the same files with tf.data (convert2torch.read_and_parse). The
    converter's rate counts from the moment all its workers have started (each imports TensorFlow
    and torch) to the end of its last file; the start and the workers' exit are shown on their own.
    The parts of its work (checks, write_shard) are timed in this process. Every measurement is
    repeated (--repeats, interleaved, since the machine may be shared) and shown as median and
    range, with the CPU time per scene, which other jobs on the machine disturb less than the rates.
    Needs TensorFlow; skipped without it.
(b) Loader: scenes/s for batches of 36 scenes of 16 views each, the project's loader (shards read
    with pread, only the asked-for views decoded: gqn_dataset.SceneViews) against the original
    torch-gqn's way (one gzip'd torch.save file per scene, every view decoded with PIL, then the
    views sliced out). Two kinds of scene: 16 views of 64x64 (all views loaded) and mazes-like
    300 views of 84x84 (16 views loaded, resized to 64).

    python benchmarks/bench_data.py                      # both parts, data cached under data/bench_data
    python benchmarks/bench_data.py --part loader --loader_workers 0 2 --batches 8

The original's scene files are read here with load_legacy_scene (gzip + the restricted
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the project's modules

import gqn_dataset  # noqa: E402
from dataset.legacy import load_legacy_scene
from dataset.shards import write_shard, write_split
from dataset.viewpoints import raw_to_viewpoint
from dataset import convert2torch, tfrecord

REPO = Path(__file__).resolve().parent.parent      # the project, one folder up
BATCH = 36                  # scenes per batch (the paper's B)
VIEWS_LOADED = 16           # views per scene in a loader batch
# the original converter's record, pickled as __main__.Scene
Scene = namedtuple("Scene", ["frames", "cameras"])


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
    print(f"writing {scenes} scenes of {views} views of {size}x{size} for the loader benchmark ...",
          flush=True)
    if size == 64:                               # Shepard-Metzler frames from the project's renderer
        subprocess.run([sys.executable, str(REPO / "dataset" / "shepard_metzler.py"), "--out",
                        str(folder / name / "render"), "--parts", "5", "--views", str(views),
                        "--train_scenes", str(scenes), "--test_scenes", "0", "--seed", "1", "--workers",
                        str(workers), "--no_progress"], check=True, cwd=REPO)
        os.replace(folder / name / "render" / "train", shards)
        shutil.rmtree(folder / name / "render")
    else:                                        # mazes-like: random boxes, PIL JPEGs
        rng = np.random.default_rng(0)
        cameras = lambda: rng.uniform(-1, 1, (views, 5)).astype(np.float32)   # noqa: E731
        write_split(shards, (([random_jpeg(rng, size) for _ in range(views)], cameras())
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
    convert2torch.read_and_parse(paths[:1])                              # warm up TF's graph functions

    def baseline():
        wall, cpu = time.perf_counter(), time.process_time()            # process_time: all of its threads
        n = convert2torch.read_and_parse(paths)
        return n / (time.perf_counter() - wall), (time.process_time() - cpu) / n, None

    def converter(workers, full_check):
        def run():
            out = Path(args.dir) / "sm5_converted"
            shutil.rmtree(out, ignore_errors=True)
            (summary,), timing = convert2torch.convert(root, "shepard_metzler_5_parts", ["train"], out,
                                                       workers=workers, progress=False, full_check=full_check)
            shutil.rmtree(out, ignore_errors=True)
            n = summary["scenes"]
            converting = timing.seconds - timing.start_up - timing.shut_down
            return n / converting, summary["cpu_seconds"] / n, (timing.start_up, timing.shut_down)
        return run

    # the parts of the converter's work, in this process, on the first 500 scenes of a file
    probe = _first_scenes(paths[0], 500)
    probe_frames = [frames for frames, _ in probe]
    probe_cameras = np.stack([cameras for _, cameras in probe])
    shard = Path(args.dir) / "probe.gqn"

    def part(work):
        def run():
            wall, cpu = time.perf_counter(), time.process_time()
            work()
            return len(probe) / (time.perf_counter() - wall), (time.process_time() - cpu) / len(probe), None
        return run

    def check_all(full_check):
        for frames in probe_frames:
            for jpeg in frames:
                convert2torch.check_frame(jpeg, 64, "frame", full_check)

    runs = [("tf.data read + parse only (baseline)", baseline)]
    for workers in args.converter_workers:
        runs += [(f"converter --workers {workers}", converter(workers, False)),
                 (f"converter --workers {workers} --full_check", converter(workers, True))]
    runs += [("  part: structural check of every frame (jpeg_info)", part(lambda: check_all(False))),
             ("  part: PIL decode of every frame (--full_check)", part(lambda: check_all(True))),
             ("  part: write_shard (checks, writes, fsync)",
              part(lambda: write_shard(shard, probe_frames, probe_cameras)))]
    results = {what: [] for what, _ in runs}          # [(scenes/s, CPU s per scene, (start, end) s or None)]
    for repeat in range(args.repeats):                  # interleaved, so that load changes hit every row
        for what, run in runs:
            results[what].append(run())
        print(f"  repeat {repeat + 1}/{args.repeats} done, load average {os.getloadavg()[0]:.1f}", flush=True)
    shard.unlink(missing_ok=True)

    read_rate, read_cpu = np.median([r[:2] for r in results[runs[0][0]]], axis=0)
    rows = []
    for what, result in results.items():
        rates, cpus = [r[0] for r in result], [r[1] for r in result]
        ends = "{:.1f} + {:.1f}".format(*np.median([r[2] for r in result], axis=0)) if result[0][2] else "-"
        rows.append((what, f"{np.median(rates):.0f}", f"{min(rates):.0f}-{max(rates):.0f}",
                     f"{np.median(rates) / read_rate:.2f}", f"{np.median(cpus) * 1e6:.0f}",
                     f"{read_cpu / np.median(cpus):.2f}", ends))
    print(f"\n(a) converter on {args.scenes} Shepard-Metzler scenes (15 views, 64x64) in {len(paths)} "
          f"TFRecord files, {megabytes:.0f} MB; {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at the end. {args.repeats} runs each, interleaved: median and range of "
          f"scenes/s, median CPU time per scene (all threads of the processes doing the work; on a shared "
          f"machine the fairer comparison). The converter's scenes/s leave out its worker processes' start "
          f"(TensorFlow imported and warmed up) and end (their exit), shown apart; with --workers 1 it runs "
          f"in this process, already started. The parts run in this process, on 500 scenes.")
    _table(["what", "scenes/s", "range", "of read rate", "CPU us/scene", "read CPU / CPU", "start + end s"],
           rows)


def _first_scenes(path, count):
    """The first `count` scenes (frames, cameras) of a TFRecord file, read with dataset/tfrecord.py."""
    scenes = []
    for data in tfrecord.iter_tfrecord(path):
        scenes.append(tfrecord.decode_gqn_example(data))
        if len(scenes) == count:
            break
    return scenes


# ----------------------------------------------------------------------------- (b) loaders

class OriginalScenes(Dataset):
    """The original torch-gqn way: scene i is the file {i}.pt.gz; every view is decoded with PIL,
    resized to 64 and made a float tensor; item = (images float (S, 3, 64, 64), viewpoints (S, 7))."""

    def __init__(self, folder):
        self.paths = [os.path.join(folder, f"{i}.pt.gz") for i in range(len(os.listdir(folder)))]

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        frames, cameras = load_legacy_scene(self.paths[index])
        images = []
        for data in frames:
            image = Image.open(io.BytesIO(data))
            if image.size != (64, 64):
                image = image.resize((64, 64), Image.BILINEAR)
            images.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1))
        return torch.stack(images), torch.from_numpy(raw_to_viewpoint(cameras))


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
    kinds = [("16 views of 64x64 (Shepard-Metzler renderer), all 16 loaded", "sm16", 16, 64,
              args.loader_scenes),
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
    p.add_argument("--scenes", type=int, default=8000, help="(a) Shepard-Metzler scenes in the TFRecords")
    p.add_argument("--files", type=int, default=8, help="(a) TFRecord files")
    p.add_argument("--converter_workers", type=int, nargs="+", default=[1, min(4, os.cpu_count() or 1)])
    p.add_argument("--repeats", type=int, default=3,
                   help="(a) runs of each measurement (median and range shown)")
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
