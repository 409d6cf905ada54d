"""Convert DeepMind's gqn-datasets TFRecords into the project's shard format (gqn_dataset.py).

Input: `<root>/<dataset>/{train,test}/<i>-of-<n>.tfrecord`, each record a tf.train.Example with
`frames` (S JPEG byte strings) and `cameras` (S*5 floats, per view x, y, z, yaw, pitch).
Output: `<out>/{train,test}/shard-XXXXX.gqn`, one shard per input file (file i-of-n becomes
shard i-1), which `train.py --train_data_dir <out>/train --test_data_dir <out>/test` and
gqn_dataset.GQNDataset read.

    python dataset/convert2torch.py shepard_metzler_5_parts --root /data/gqn-datasets --out /data/sm5-torch
        [--splits train test] [--workers 4]

What it does and does not do:
- The JPEG bytes are kept exactly as DeepMind encoded them. Frames of 84 (mazes) and 128 pixels
  (rooms_free_camera_with_object_rotations) are NOT resized here; gqn_dataset resizes them to 64
  at load time. The shard header records the stored frame size ("image_size"), "dataset" and
  the input file's name ("source").
- Every record is checked: S frames that decode as JPEG to the table's frame size, S*5 finite
  cameras. The first bad record stops the run with one sentence naming the file and record index
  (a truncated file or a CRC failure included).
- Resumable: shards are written atomically (gqn_dataset.write_shard), so a shard that exists is
  complete and a rerun skips it; a file whose conversion was interrupted is converted again.
- The input files are converted by --workers processes in parallel, one file per process at a
  time (TensorFlow 2 tf.data, records parsed in batches), with a progress bar in scenes/s and a
  summary at the end. Speed (bench_data.py, Shepard-Metzler): about 600 scenes/s per worker on
  one core, most of it the decode check of every frame; each worker takes a few seconds to start
  (it imports TensorFlow and torch).

TensorFlow (`pip install tensorflow-cpu`) is needed only here, and only when converting; the rest
of the project never imports it.
"""
import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import contextlib
import difflib
import io
import multiprocessing
import queue
import re
import signal
import time
from collections import namedtuple
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

import gqn_dataset

DatasetInfo = namedtuple("DatasetInfo", "train_files test_files image_size views")

# DeepMind's gqn-datasets (spec section 4): files per split, stored frame size, views per scene
DATASETS = {
    "jaco": DatasetInfo(3600, 400, 64, 11),
    "mazes": DatasetInfo(1080, 120, 84, 300),
    "rooms_free_camera_with_object_rotations": DatasetInfo(2034, 226, 128, 10),
    "rooms_ring_camera": DatasetInfo(2160, 240, 64, 10),
    "rooms_free_camera_no_object_rotations": DatasetInfo(2160, 240, 64, 10),
    "shepard_metzler_5_parts": DatasetInfo(900, 100, 64, 15),
    "shepard_metzler_7_parts": DatasetInfo(900, 100, 64, 15),
}
SPLITS = ("train", "test")
CAMERA_DIMS = 5            # x, y, z, yaw, pitch
PARSE_BATCH = 64           # records parsed per tf.io.parse_example call
READ_BUFFER = 8 << 20      # bytes of read-ahead per TFRecord file
PROGRESS_EVERY = 64        # a worker reports its progress every this many records

Job = namedtuple("Job", "split tfrecord shard")
FileResult = namedtuple("FileResult", "scenes bytes_in bytes_out")


class ConversionError(Exception):
    """A user-facing problem with the input files or the output folder (one clear sentence)."""


class _Stopped(Exception):
    """Raised inside a worker when the parent asked all workers to stop (another file failed)."""


# ----------------------------------------------------------------------------- files

def tfrecord_files(root, dataset, split):
    """The sorted TFRecord files of one split: <root>/<dataset>/<split>/*.tfrecord."""
    folder = Path(root) / dataset / split
    if not folder.is_dir():
        raise ConversionError(f"{folder} is not a folder; pass --root, the folder that holds "
                              f"{dataset}/{split}/*.tfrecord (DeepMind's gqn-datasets layout).")
    files = sorted(folder.glob("*.tfrecord"), key=_file_order)
    if not files:
        raise ConversionError(f"{folder} holds no .tfrecord files; download {dataset}/{split} "
                              f"from DeepMind's gqn-datasets into it or pass the right --root.")
    return files


_NUMBERED = re.compile(r"(\d+)-of-(\d+)\.tfrecord")


def _file_order(path):
    m = _NUMBERED.fullmatch(path.name)
    return (int(m.group(1)), path.name) if m else (-1, path.name)


def shard_name(tfrecord):
    """Output shard name of one input file: `<i>-of-<n>.tfrecord` -> `shard-<i-1>.gqn` (5 digits),
    so a rerun finds the shard of each file whatever other files the folder holds."""
    m = _NUMBERED.fullmatch(Path(tfrecord).name)
    if not m or int(m.group(1)) < 1:
        raise ConversionError(f"{tfrecord} is not named <i>-of-<n>.tfrecord (i from 1) as DeepMind's "
                              f"gqn-datasets files are; rename it so, e.g. 001-of-100.tfrecord.")
    return gqn_dataset.SHARD_NAME.format(int(m.group(1)) - 1)


def shard_is_complete(path, dataset, tfrecord):
    """True when `path` is the whole shard converted from `tfrecord` of `dataset`: write_shard writes
    atomically and read_shard_header checks the file size against the header, so a shard that reads
    is complete. Raises when the shard holds other scenes (another dataset, another input file or
    another program's shard): overwriting or keeping it would mix data."""
    try:
        header = gqn_dataset.read_shard_header(path)
    except gqn_dataset.DatasetError:
        return False                                        # damaged: convert again
    source = (header.get("dataset"), header.get("source"))
    if source != (dataset, Path(tfrecord).name):
        held = f"{source[0]} from {source[1]}" if source[1] else "scenes not converted by this script"
        raise ConversionError(f"{path} holds {held}, not {dataset} from {Path(tfrecord).name}; pass another "
                              f"--out or delete that folder.")
    info = DATASETS[dataset]
    return header["views"] == info.views and header["image_size"] == info.image_size


_TEMPORARY = re.compile(r"\.shard-\d+\.gqn\.tmp-(\d+)")          # write_shard's temporary files


def remove_stale_temporaries(split_dir):
    """Delete the temporary files that an interrupted run's write_shard left behind (their writer,
    named by the process id in the file name, no longer runs). Returns how many were removed."""
    removed = 0
    for name in os.listdir(split_dir):
        m = _TEMPORARY.fullmatch(name)
        if m and not _process_alive(int(m.group(1))):
            os.remove(os.path.join(split_dir, name))
            removed += 1
    return removed


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True                                         # exists, owned by someone else
    return True


# ----------------------------------------------------------------------------- one file

def _import_tensorflow():
    """TensorFlow, imported on first use with its start-up log lines (oneDNN, CPU features, absl)
    kept off the terminal; errors later on still reach stderr."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")      # TF's C++ INFO lines (read once, at first log)
    try:
        with _quiet_stderr():
            import tensorflow as tf
            tf.io.parse_example(tf.constant([], tf.string), {"f": tf.io.RaggedFeature(tf.string)})
    except ImportError:
        raise ConversionError("TensorFlow is needed to read TFRecords; install it with "
                              "`pip install tensorflow-cpu` (only the converter needs it).") from None
    return tf


@contextlib.contextmanager
def _quiet_stderr():
    """Send file descriptor 2 (where TensorFlow's C++ side logs) to /dev/null for a while."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_progress = None           # in a worker: a queue that receives scene counts
_stop = None               # in a worker: an Event the parent sets to stop all workers


def _init_worker(progress_queue, stop_event):
    global _progress, _stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)            # Ctrl-C is the parent's to handle
    _progress, _stop = progress_queue, stop_event


def check_frame(jpeg, image_size):
    """None when `jpeg` decodes (with PIL, the loader's decoder) as an image_size x image_size RGB
    JPEG, else what is wrong and what to do, as the end of a sentence."""
    try:
        with Image.open(io.BytesIO(jpeg), formats=["JPEG"]) as im:
            im.load()                                       # decode every pixel: truncation raises
            size, mode = im.size, im.mode
    except UnidentifiedImageError:
        return "is not a decodable JPEG (no JPEG header); the file is damaged, download it again"
    except Exception as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return f"is not a decodable JPEG ({reason}); the file is damaged, download it again"
    if size != (image_size, image_size):
        return (f"is {size[0]}x{size[1]} pixels but this dataset's frames are {image_size}x{image_size}; "
                f"the file belongs to another dataset, pass the right dataset name")
    if mode != "RGB":
        return f"is a {mode} image, not RGB; the file is not a gqn-datasets file or is damaged"
    return None


def _locate_read_error(tf, path, fallback):
    """Index of the first record of `path` that TensorFlow cannot read (fallback if all read)."""
    index = 0
    try:
        for _ in tf.data.TFRecordDataset(str(path)):
            index += 1
    except tf.errors.OpError:
        return index
    return fallback


def _parse_batch(tf, raw, features, path, first):
    """tf.io.parse_example over a batch; on failure find the first record that is not an Example."""
    try:
        return tf.io.parse_example(raw, features)
    except tf.errors.InvalidArgumentError:
        for i in range(int(raw.shape[0])):
            try:
                tf.io.parse_example(raw[i:i + 1], features)
            except tf.errors.InvalidArgumentError:
                raise ConversionError(f"{path}: record {first + i} is not a tf.train.Example with "
                                      f"'frames' (bytes) and 'cameras' (floats); the file is not a "
                                      f"gqn-datasets TFRecord or is damaged.") from None
        raise


def read_scenes(path, dataset):
    """Checked scenes of one TFRecord file: (frames, cameras), frames a list of n lists of S JPEG
    bytes (unchanged), cameras float32 (n, S, 5). Raises ConversionError at the first bad record."""
    tf = _import_tensorflow()
    info = DATASETS[dataset]
    S = info.views
    features = {"frames": tf.io.RaggedFeature(tf.string), "cameras": tf.io.RaggedFeature(tf.float32)}
    records = tf.data.TFRecordDataset(str(path), buffer_size=READ_BUFFER).batch(PARSE_BATCH)
    frames, cameras = [], []
    iterator = iter(records)
    reported = 0
    while True:
        if _stop is not None and _stop.is_set():
            raise _Stopped()
        first = len(frames)
        try:
            raw = next(iterator)                                       # (B,) serialized Examples
        except StopIteration:
            break
        except tf.errors.DataLossError:
            index = _locate_read_error(tf, path, first)
            raise ConversionError(f"{path}: record {index} is truncated or fails its CRC check; the "
                                  f"file is damaged, download it again.") from None
        except tf.errors.OpError as err:
            raise ConversionError(f"{path}: cannot be read ({err.message.splitlines()[0]}).") from None
        parsed = _parse_batch(tf, raw, features, path, first)
        frame_splits = parsed["frames"].row_splits.numpy()             # (B+1,)
        frame_bytes = parsed["frames"].values.numpy()                  # (sum of S_b,) object array of bytes
        camera_splits = parsed["cameras"].row_splits.numpy()
        camera_values = parsed["cameras"].values.numpy()               # (sum of 5*S_b,) float32
        for b in range(len(frame_splits) - 1):
            index = first + b
            scene_frames = frame_bytes[frame_splits[b]:frame_splits[b + 1]].tolist()
            scene_cameras = camera_values[camera_splits[b]:camera_splits[b + 1]]
            _check_record(path, index, dataset, scene_frames, scene_cameras)
            frames.append(scene_frames)
            cameras.append(scene_cameras.reshape(S, CAMERA_DIMS))     # (S*5,) -> (S, 5)
        if _progress is not None and len(frames) - reported >= PROGRESS_EVERY:
            _progress.put(len(frames) - reported)
            reported = len(frames)
    if not frames:
        raise ConversionError(f"{path} holds no records; the file is empty or damaged, download it again.")
    if _progress is not None and len(frames) > reported:
        _progress.put(len(frames) - reported)
    return frames, np.stack(cameras).astype(np.float32)                # (n, S, 5)


def read_and_parse(paths, batch=PARSE_BATCH):
    """The baseline that bench_data.py compares the converter with: read and parse TFRecord files with
    tf.data alone (files read in parallel, records parsed in batches on TF's threads, frames and
    cameras handed to Python as numpy), no checks, nothing written. Returns the number of records."""
    tf = _import_tensorflow()
    features = {"frames": tf.io.RaggedFeature(tf.string), "cameras": tf.io.RaggedFeature(tf.float32)}
    records = (tf.data.TFRecordDataset([str(p) for p in paths], buffer_size=READ_BUFFER,
                                       num_parallel_reads=tf.data.AUTOTUNE)
               .batch(batch).map(lambda raw: tf.io.parse_example(raw, features), num_parallel_calls=tf.data.AUTOTUNE)
               .prefetch(tf.data.AUTOTUNE))
    count = 0
    for parsed in records:
        parsed["frames"].values.numpy()                                # (sum of S_b,) JPEG bytes
        parsed["cameras"].values.numpy()
        count += int(parsed["frames"].nrows())
    return count


def _check_record(path, index, dataset, frames, cameras):
    info = DATASETS[dataset]
    S = info.views
    where = f"{path}: record {index}"
    if len(frames) != S:
        raise ConversionError(f"{where} has {len(frames)} frames, but {dataset} has {S} views per scene; "
                              f"the file belongs to another dataset or is damaged.")
    if len(cameras) != S * CAMERA_DIMS:
        raise ConversionError(f"{where} has {len(cameras)} camera values, expected {S * CAMERA_DIMS} "
                              f"({S} views x 5); the file is damaged.")
    if not np.all(np.isfinite(cameras)):
        raise ConversionError(f"{where} has a camera value that is not finite (NaN or inf); the file is damaged.")
    for j, jpeg in enumerate(frames):
        problem = check_frame(jpeg, info.image_size)
        if problem:
            raise ConversionError(f"{where}: frame {j} {problem}.")


def convert_file(tfrecord, shard, dataset):
    """Convert one TFRecord file into one shard (written atomically). Returns a FileResult."""
    frames, cameras = read_scenes(tfrecord, dataset)
    # write_shard records the stored frame size itself as "image_size" (84 or 128 stay as they are)
    try:
        gqn_dataset.write_shard(shard, frames, cameras,
                                extra_header={"dataset": dataset, "source": Path(tfrecord).name})
    except OSError as err:
        raise ConversionError(f"cannot write {shard} ({err.strerror}); free disk space or pass "
                              f"another --out.") from None
    except gqn_dataset.DatasetError as err:
        raise ConversionError(f"{tfrecord}: {err}") from None
    return FileResult(len(frames), os.path.getsize(tfrecord), os.path.getsize(shard))


def _convert_job(job, dataset):
    return job.split, convert_file(str(job.tfrecord), str(job.shard), dataset)


# ----------------------------------------------------------------------------- all files

def plan(root, dataset, splits, out):
    """Check the input folders and list the work: (jobs, split summaries). A file whose shard is
    already complete is skipped. Every split is checked before any work starts."""
    jobs, summaries = [], {}
    for split in splits:
        files = tfrecord_files(root, dataset, split)
        split_dir = Path(out) / split
        try:
            split_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConversionError(f"cannot create the output folder {split_dir} ({err.strerror}); "
                                  f"pass a writable --out.") from None
        names = [shard_name(f) for f in files]
        if len(set(names)) != len(names):
            twins = [str(f) for f, name in zip(files, names) if names.count(name) > 1][:2]
            raise ConversionError(f"{twins[0]} and {twins[1]} have the same file number; keep one of them.")
        remove_stale_temporaries(split_dir)
        skipped = 0
        for tfrecord, name in zip(files, names):
            shard = split_dir / name
            if shard.exists() and shard_is_complete(shard, dataset, tfrecord):
                skipped += 1
            else:
                jobs.append(Job(split, tfrecord, shard))
        summaries[split] = {"split": split, "files": len(files), "skipped": skipped, "converted": 0,
                            "scenes": 0, "bytes_in": 0, "bytes_out": 0, "out": str(split_dir),
                            "expected_files": getattr(DATASETS[dataset], f"{split}_files")}
    return jobs, summaries


def convert(root, dataset, splits, out, workers=1, progress=True):
    """Convert <root>/<dataset>/<split>/*.tfrecord into <out>/<split>/shard-*.gqn for each split.
    Returns (summaries: one dict per split, seconds). Raises ConversionError at the first bad record."""
    jobs, summaries = plan(root, dataset, splits, out)
    skipped = sum(s["skipped"] for s in summaries.values())
    start = time.perf_counter()
    bar = tqdm(total=None, unit="scene", desc=dataset, disable=not progress, dynamic_ncols=True)
    tally = _Tally(bar, summaries, len(jobs), skipped)
    try:
        if jobs and (workers <= 1 or len(jobs) == 1):
            _run_here(jobs, dataset, tally)
        elif jobs:
            _run_pool(jobs, dataset, min(workers, len(jobs)), tally)
    finally:
        bar.close()
    return list(summaries.values()), time.perf_counter() - start


class _Tally:
    """Adds finished files into the split summaries and keeps the progress bar's total estimated."""

    def __init__(self, bar, summaries, n_jobs, skipped):
        self.bar, self.summaries, self.n_jobs, self.skipped, self.done = bar, summaries, n_jobs, skipped, 0
        self._postfix()

    def _postfix(self):
        extra = f", {self.skipped} already done" if self.skipped else ""
        self.bar.set_postfix_str(f"files {self.done}/{self.n_jobs}{extra}", refresh=False)

    def put(self, scenes):                                  # progress inside a file
        self.bar.update(scenes)

    def file_done(self, split, result):
        s = self.summaries[split]
        s["converted"] += 1
        s["scenes"] += result.scenes
        s["bytes_in"] += result.bytes_in
        s["bytes_out"] += result.bytes_out
        self.done += 1
        scenes = sum(t["scenes"] for t in self.summaries.values())
        self.bar.total = scenes if self.done == self.n_jobs else round(scenes / self.done * self.n_jobs)
        self._postfix()
        self.bar.refresh()


def _run_here(jobs, dataset, tally):
    global _progress
    _progress = tally
    try:
        for job in jobs:
            tally.file_done(*_convert_job(job, dataset))
    finally:
        _progress = None


def _run_pool(jobs, dataset, workers, tally):
    # spawn, not fork: a fork of a process whose TensorFlow threads run can deadlock in the child
    context = multiprocessing.get_context("spawn")
    progress_queue, stop_event = context.Queue(), context.Event()
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                               initargs=(progress_queue, stop_event))
    try:
        pending = {pool.submit(_convert_job, job, dataset) for job in jobs}
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(progress_queue, tally)
            for future in done:
                tally.file_done(*future.result())
        _drain(progress_queue, tally)
    except BrokenProcessPool:
        pool.shutdown(wait=True, cancel_futures=True)
        raise ConversionError(f"a worker process died (killed, or out of memory?); run the same command "
                              f"again with fewer --workers than {workers}, finished shards are kept.") from None
    except BaseException:
        stop_event.set()                                   # running workers stop at their next batch
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _drain(progress_queue, tally):
    while True:
        try:
            tally.put(progress_queue.get_nowait())
        except queue.Empty:
            return


# ----------------------------------------------------------------------------- command line

def _summary_line(dataset, s):
    line = (f"{dataset}/{s['split']}: {s['scenes']} scenes from {s['converted']} files converted"
            f" ({s['skipped']} already done), read {s['bytes_in'] / 1e6:.1f} MB,"
            f" wrote {s['bytes_out'] / 1e6:.1f} MB into {s['out']}")
    if s["files"] != s["expected_files"]:
        line += f" (note: {s['files']} input files, the full split has {s['expected_files']})"
    return line


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Convert DeepMind gqn-datasets TFRecords into the project's "
                                            "shard format (see gqn_dataset.py).")
    p.add_argument("dataset", help="one of: " + ", ".join(DATASETS))
    p.add_argument("--root", default=".", help="folder holding <dataset>/{train,test}/*.tfrecord (default .)")
    p.add_argument("--out", default=None, help="output folder, gets train/ and test/ (default <dataset>-torch)")
    p.add_argument("--splits", nargs="+", default=list(SPLITS), help="splits to convert (default train test)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="processes converting the files of a split in parallel (default min(4, cpu count))")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.dataset not in DATASETS:
        close = difflib.get_close_matches(args.dataset, DATASETS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise SystemExit(f"convert2torch.py: unknown dataset '{args.dataset}'; {hint}"
                         f"choose one of: {', '.join(DATASETS)}.")
    for split in args.splits:
        if split not in SPLITS:
            raise SystemExit(f"convert2torch.py: unknown split '{split}'; choose from: {', '.join(SPLITS)}.")
    if args.workers < 1:
        raise SystemExit(f"convert2torch.py: --workers must be at least 1, got {args.workers}.")
    if args.out is None:
        args.out = f"{args.dataset}-torch"
    return args


def main(argv=None):
    """Run the converter; returns (per-split summaries, seconds). Errors end in SystemExit(one sentence)."""
    args = parse_args(argv)
    try:
        summaries, seconds = convert(args.root, args.dataset, args.splits, args.out, workers=args.workers,
                                     progress=not args.no_progress)
    except ConversionError as err:
        raise SystemExit(f"convert2torch.py: {err}") from None
    except KeyboardInterrupt:
        raise SystemExit("convert2torch.py: interrupted; finished shards are kept, run the same "
                         "command again to convert the rest.") from None
    for summary in summaries:
        print(_summary_line(args.dataset, summary))
    scenes = sum(s["scenes"] for s in summaries)
    print(f"total: {scenes} scenes in {seconds:.1f} s, {scenes / max(seconds, 1e-9):.0f} scenes/s;"
          f" read {sum(s['bytes_in'] for s in summaries) / 1e6:.1f} MB,"
          f" wrote {sum(s['bytes_out'] for s in summaries) / 1e6:.1f} MB", flush=True)
    return summaries, seconds


if __name__ == "__main__":
    main()
