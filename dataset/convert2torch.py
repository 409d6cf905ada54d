"""Convert DeepMind's gqn-datasets TFRecords into the project's shard format (dataset/shards.py).

Input: `<root>/<dataset>/{train,test}/<i>-of-<n>.tfrecord`, each record a tf.train.Example with
`frames` (S JPEG byte strings) and `cameras` (S*5 floats, per view x, y, z, yaw, pitch).
Output: `<out>/{train,test}/shard-XXXXX.gqn`, one shard per input file (file i-of-n becomes
shard i-1), which `train.py --train_data_dir <out>/train --test_data_dir <out>/test` and
gqn_dataset.GQNDataset read.

    python dataset/convert2torch.py shepard_metzler_5_parts --root /data/gqn-datasets --out /data/sm5-torch
        [--splits train test] [--workers 4] [--full_check]

What it does and does not do:
- The JPEG bytes are kept exactly as DeepMind encoded them. Frames of 84 (mazes) and 128 pixels
  (rooms_free_camera_with_object_rotations) are NOT resized here; gqn_dataset resizes them to 64
  at load time. The shard header records the stored frame size ("image_size"), "dataset" and
  the input file's name ("source").
- Every record is checked, and the first bad one stops the run with one sentence naming the file,
  the record index and the frame:
  * always: the file reads (TFRecord framing and CRC-32C of every record: a truncated or damaged
    download stops here), the record is a tf.train.Example with S frames and S*5 finite cameras
    (S from the dataset table), and every frame is a well-formed JPEG of the table's frame size
    with 3 components. The frame check is jpeg_info, a walk over the JPEG's markers
    without decoding (far cheaper than decoding): it catches truncated frames (the end marker is gone),
    data that is not a JPEG, damaged headers and frames of another size or colour format.
  * with --full_check also: every frame decodes with PIL, the loader's decoder (many times
    slower in all). That adds damage INSIDE a frame's compressed image data
    (after its headers) that the decoder refuses, e.g. a stray marker; the default check cannot
    see it. Without --full_check such a frame is found only at training time: train.py stops with
    one sentence naming the shard, scene and view, or leaves the scene out with --skip_bad_scenes.
    Damage that still decodes (to wrong pixels) is caught by neither; the TFRecords' CRCs guard
    the download against it, and the shards' own checksums (dataset/shards.py) the shards after.
- Resumable: shards are written atomically (write_shard), so a shard that exists is
  complete and a rerun skips it; a file whose conversion was interrupted is converted again.
- The input files are converted by --workers processes in parallel, one file per process at a
  time. In each, TensorFlow reads the records (checking their CRCs) and parses them in batches;
  the checks run on whole batches (numpy for counts and cameras, jpeg_info over the frames).
  Each worker first starts (imports TensorFlow, reads a one-record file: a few
  seconds); the workers wait for each other and then convert. A progress bar shows scenes/s, and
  the summary shows the start, the conversion with its rate, and the workers' exit apart.
  Its speed against merely reading the files with tf.data: `python benchmarks/bench_data.py`
  (benchmarks/README.md).

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
import tempfile
import threading
import time
from collections import namedtuple
from concurrent.futures import FIRST_COMPLETED, FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from dataset.errors import DatasetError
from dataset.jpeg import jpeg_info
from dataset.shards import SHARD_NAME, read_shard_header, write_shard

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
RECORD_OVERHEAD = 16       # bytes around each TFRecord record: its length (8) and two CRC32Cs (4 + 4)
PROGRESS_EVERY = 64        # a worker reports its progress every this many records
START_TIMEOUT = 600        # seconds a started worker waits for the others to start

Job = namedtuple("Job", "split tfrecord shard")
# convert()'s clock, seconds: the whole run, then the part before the first file started (the workers
# start: they import TensorFlow) and the part after the last file ended (the workers exit)
Timing = namedtuple("Timing", "seconds start_up shut_down")
# cpu: of its process, all threads
FileResult = namedtuple("FileResult", "scenes bytes_in bytes_out cpu_seconds")


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
    return SHARD_NAME.format(int(m.group(1)) - 1)


def shard_is_complete(path, dataset, tfrecord):
    """True when `path` is the whole shard converted from `tfrecord` of `dataset`: write_shard writes
    atomically and read_shard_header checks the file size against the header, so a shard that reads
    is complete; and `tfrecord` must have the size it had then (a file downloaded again, whole this time,
    is converted again). Raises when the shard holds other scenes (another dataset, another input file or
    another program's shard): overwriting or keeping it would mix data."""
    try:
        header = read_shard_header(path)
    except DatasetError:
        return False                                        # damaged: convert again
    source = (header.get("dataset"), header.get("source"))
    if source != (dataset, Path(tfrecord).name):
        held = f"{source[0]} from {source[1]}" if source[1] else "scenes not converted by this script"
        raise ConversionError(f"{path} holds {held}, not {dataset} from {Path(tfrecord).name}; pass another "
                              f"--out or delete that folder.")
    info = DATASETS[dataset]
    # not re-downloaded
    same_file = header.get("source_bytes", os.path.getsize(tfrecord)) == os.path.getsize(tfrecord)
    return same_file and header["views"] == info.views and header["image_size"] == info.image_size


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
_started = None            # in a worker: a Barrier that all workers pass once started (see _start_worker)
_warmed_up = False         # whether this process has run _warm_up


def _init_worker(progress_queue, stop_event, started):
    global _progress, _stop, _started
    signal.signal(signal.SIGINT, signal.SIG_IGN)            # Ctrl-C is the parent's to handle
    _progress, _stop, _started = progress_queue, stop_event, started


def _start_worker():
    """A worker's first task: import TensorFlow and warm it up,
    then wait until every worker has got that far, so that all of them start converting together and
    the parent can tell start-up time from conversion time. Returns the process id."""
    _warm_up()
    try:
        _started.wait(timeout=START_TIMEOUT)
    except threading.BrokenBarrierError:
        raise _Stopped() from None                          # another worker failed, or the parent stopped
    return os.getpid()


# ----------------------------------------------------------------------------- checks

def check_frame(jpeg, image_size, where, full_check=False):
    """Raise ConversionError (one sentence starting with `where`) unless `jpeg` is a well-formed JPEG of
    image_size x image_size pixels and 3 components, by jpeg_info's walk over its markers
    (truncation, other formats, damaged headers); with full_check it must also decode with PIL, the
    loader's decoder (damage inside the entropy-coded image data that the decoder refuses)."""
    try:
        height, width, components = jpeg_info(jpeg, where)
    except DatasetError as err:
        raise ConversionError(str(err)) from None
    if (height, width) != (image_size, image_size):
        raise ConversionError(f"{where} is {width}x{height} pixels but this dataset's frames are "
                              f"{image_size}x{image_size}; the file belongs to another dataset, "
                              f"pass the right dataset name.")
    if components != 3:
        raise ConversionError(f"{where} has {components} colour component{'s' if components > 1 else ''}, "
                              f"not 3 (RGB); the file is not a gqn-datasets file or is damaged.")
    if full_check:
        try:
            with Image.open(io.BytesIO(jpeg), formats=["JPEG"]) as image:
                image.load()                                # decode every pixel
        except Exception as err:                            # PIL raises many kinds for bad data
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ConversionError(f"{where} does not decode as a JPEG ({reason}); the file is damaged, "
                                  f"download it again.") from None


def _check_record(path, index, dataset, frames, cameras, full_check):
    """Raise ConversionError (one sentence naming the file, record and frame) if a record is bad."""
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
        raise ConversionError(f"{where} has a camera value that is not finite (NaN or inf); "
                              f"the file is damaged.")
    for j, jpeg in enumerate(frames):
        check_frame(jpeg, info.image_size, f"{where}: frame {j}", full_check)


def _batch_is_good(frames, frame_splits, cameras, camera_splits, info, full_check):
    """True when every record of a parsed batch passes _check_record's checks, done for the whole batch
    at once; False sends the batch through _check_record record by record, which names the first bad one.
    frames: (F,) JPEG bytes of all records; cameras: (sum of 5*S_b,) float32; splits: (B+1,) row starts."""
    S = info.views
    if (np.any(np.diff(frame_splits) != S) or np.any(np.diff(camera_splits) != S * CAMERA_DIMS)
            or not np.isfinite(cameras).all()):
        return False
    try:
        shapes = set(map(jpeg_info, frames))    # {(height, width, components)}
    except DatasetError:
        return False
    if shapes != {(info.image_size, info.image_size, 3)}:
        return False
    if full_check:
        try:
            for jpeg in frames:
                check_frame(jpeg, info.image_size, "frame", full_check=True)
        except ConversionError:
            return False
    return True


# ----------------------------------------------------------------------------- one file

def _features(tf):
    return {"frames": tf.io.RaggedFeature(tf.string), "cameras": tf.io.RaggedFeature(tf.float32)}


def _raw_records(tf, path):
    """Iterator over the serialized records of a TFRecord file, bytes, each CRC-checked by TensorFlow
    (tf.errors.DataLossError at the first truncated or damaged record). TensorFlow's plain record reader,
    cheaper per file than a tf.data pipeline (which is built and torn down for each file), tf.data where
    a TensorFlow no longer has it."""
    reader = getattr(getattr(tf.compat.v1, "io", None), "tf_record_iterator", None)
    if reader is None:
        return tf.data.TFRecordDataset(str(path), buffer_size=READ_BUFFER).as_numpy_iterator()
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")               # it is marked deprecated (in favour of tf.data) on its first call
    try:
        return reader(str(path))
    finally:
        logger.setLevel(level)


def _parse_batch(tf, raw, features, path, first):
    """tf.io.parse_example over a batch of serialized records; on failure, one sentence naming the first
    record of the batch that is not an Example with frames and cameras."""
    try:
        return tf.io.parse_example(raw, features)
    except tf.errors.InvalidArgumentError:
        for i in range(len(raw)):
            try:
                tf.io.parse_example(raw[i:i + 1], features)
            except tf.errors.InvalidArgumentError:
                raise ConversionError(f"{path}: record {first + i} is not a tf.train.Example "
                                      f"with 'frames' (bytes) and 'cameras' (floats); "
                                      f"the file is not a gqn-datasets TFRecord or is damaged.") from None
        raise


def _warm_up():
    """Import TensorFlow and read a one-record file as read_scenes does: the first record read and the
    first parse in a process cost a good part of a second, which belongs to the start-up, not to a file."""
    global _warmed_up
    tf = _import_tensorflow()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "warm-up.tfrecord")
        feature = {"frames": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"\xff\xd8"])),
                   "cameras": tf.train.Feature(float_list=tf.train.FloatList(value=[0.0] * CAMERA_DIMS))}
        with tf.io.TFRecordWriter(path) as writer:
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
        parsed = _parse_batch(tf, list(_raw_records(tf, path)), _features(tf), path, 0)
        parsed["frames"].values.numpy(), parsed["cameras"].values.numpy()
    _warmed_up = True


def read_scenes(path, dataset, full_check=False):
    """Checked scenes of one TFRecord file: (frames, cameras), frames a list of n lists of S JPEG
    bytes (unchanged), cameras float32 (n, S, 5). Raises ConversionError at the first bad record.

    Records are read (CRC-checked) and parsed by TensorFlow in batches of PARSE_BATCH; the checks run
    on whole batches (numpy for counts and cameras, jpeg_info over the batch's frames),
    record by record only for a batch with a bad record, to name the first."""
    tf = _import_tensorflow()
    info = DATASETS[dataset]
    S = info.views
    features = _features(tf)
    frames, cameras = [], []                               # (n*S,) JPEG bytes; batches of (B*S*5,) float32
    try:
        records = _raw_records(tf, path)
    except tf.errors.OpError as err:
        raise ConversionError(f"{path}: cannot be read ({err.message.splitlines()[0]}).") from None
    reported = read = 0                                    # scenes reported; bytes of the records read
    while True:
        if _stop is not None and _stop.is_set():
            raise _Stopped()
        first = len(frames) // S                           # index of the batch's first record
        raw = []                                           # (B,) serialized Examples
        try:
            for record in records:
                raw.append(record)
                read += len(record) + RECORD_OVERHEAD
                if len(raw) == PARSE_BATCH:
                    break
        except tf.errors.DataLossError:
            raise ConversionError(f"{path}: record {first + len(raw)} is truncated or fails its CRC check; "
                                  f"the file is damaged, download it again.") from None
        except tf.errors.OpError as err:
            raise ConversionError(f"{path}: cannot be read ({err.message.splitlines()[0]}).") from None
        if not raw:
            break
        parsed = _parse_batch(tf, raw, features, path, first)
        frame_splits = parsed["frames"].row_splits.numpy()             # (B+1,)
        batch_frames = parsed["frames"].values.numpy().tolist()        # (sum of S_b,) JPEG bytes
        camera_splits = parsed["cameras"].row_splits.numpy()           # (B+1,)
        batch_cameras = parsed["cameras"].values.numpy()               # (sum of 5*S_b,) float32
        if not _batch_is_good(batch_frames, frame_splits, batch_cameras, camera_splits, info, full_check):
            for b in range(len(frame_splits) - 1):
                _check_record(path, first + b, dataset, batch_frames[frame_splits[b]:frame_splits[b + 1]],
                              batch_cameras[camera_splits[b]:camera_splits[b + 1]], full_check)
            raise AssertionError("_batch_is_good and _check_record disagree")   # a bug, not bad data
        frames.extend(batch_frames)
        cameras.append(batch_cameras)
        if _progress is not None and len(frames) // S - reported >= PROGRESS_EVERY:
            _progress.put(len(frames) // S - reported)
            reported = len(frames) // S
    n = len(frames) // S
    if not n:
        raise ConversionError(f"{path} holds no records; the file is empty or damaged, download it again.")
    size = os.path.getsize(path)
    # TensorFlow's reader ends quietly at a cut inside a record's length header
    if read != size:
        raise ConversionError(f"{path}: the file ends inside the record after record {n - 1} "
                              f"({read:,} of its {size:,} bytes are whole records); "
                              f"it is truncated or damaged, download it again.")
    if _progress is not None and n > reported:
        _progress.put(n - reported)
    scenes = [frames[i:i + S] for i in range(0, n * S, S)]            # n lists of S JPEG bytes
    return scenes, np.concatenate(cameras).reshape(n, S, CAMERA_DIMS)  # (n, S, 5) float32


def read_and_parse(paths, batch=PARSE_BATCH):
    """The baseline that benchmarks/bench_data.py compares the converter with: read and parse TFRecord
    files with tf.data alone (files read in parallel, records parsed in batches on TF's threads, frames
    and cameras handed to Python as numpy), no checks, nothing written. Returns the number of records."""
    tf = _import_tensorflow()
    features = {"frames": tf.io.RaggedFeature(tf.string), "cameras": tf.io.RaggedFeature(tf.float32)}
    records = (tf.data.TFRecordDataset([str(p) for p in paths], buffer_size=READ_BUFFER,
                                       num_parallel_reads=tf.data.AUTOTUNE)
               .batch(batch).map(lambda raw: tf.io.parse_example(raw, features),
                                 num_parallel_calls=tf.data.AUTOTUNE)
               .prefetch(tf.data.AUTOTUNE))
    count = 0
    for parsed in records:
        parsed["frames"].values.numpy()                                # (sum of S_b,) JPEG bytes
        parsed["cameras"].values.numpy()
        count += int(parsed["frames"].nrows())
    return count


def convert_file(tfrecord, shard, dataset, full_check=False):
    """Convert one TFRecord file into one shard (written atomically). Returns a FileResult."""
    cpu = time.process_time()
    frames, cameras = read_scenes(tfrecord, dataset, full_check)
    # write_shard records the stored frame size itself as "image_size" (84 or 128 stay as they are)
    try:
        write_shard(shard, frames, cameras,
                                extra_header={"dataset": dataset, "source": Path(tfrecord).name,
                                              "source_bytes": os.path.getsize(tfrecord)})
    except OSError as err:
        raise ConversionError(f"cannot write {shard} ({err.strerror}); free disk space or pass "
                              f"another --out.") from None
    except DatasetError as err:
        raise ConversionError(f"{tfrecord}: {err}") from None
    return FileResult(len(frames), os.path.getsize(tfrecord), os.path.getsize(shard),
                      time.process_time() - cpu)


def _convert_job(job, dataset, full_check):
    return job.split, convert_file(str(job.tfrecord), str(job.shard), dataset, full_check)


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
                            "scenes": 0, "bytes_in": 0, "bytes_out": 0, "cpu_seconds": 0.0,
                            "out": str(split_dir),
                            "expected_files": getattr(DATASETS[dataset], f"{split}_files")}
    return jobs, summaries


def convert(root, dataset, splits, out, workers=1, progress=True, full_check=False):
    """Convert <root>/<dataset>/<split>/*.tfrecord into <out>/<split>/shard-*.gqn for each split.
    Returns (summaries: one dict per split, Timing): the conversion proper takes seconds - start_up -
    shut_down. Raises ConversionError at the first bad record."""
    jobs, summaries = plan(root, dataset, splits, out)
    skipped = sum(s["skipped"] for s in summaries.values())
    start = time.perf_counter()
    bar = tqdm(total=None, unit="scene", desc=dataset, disable=not progress, dynamic_ncols=True)
    tally = _Tally(bar, summaries, len(jobs), skipped)
    try:
        if jobs and (workers <= 1 or len(jobs) == 1):
            _run_here(jobs, dataset, tally, full_check)
        elif jobs:
            _run_pool(jobs, dataset, min(workers, len(jobs)), tally, full_check)
    finally:
        bar.close()
    end = time.perf_counter()
    started, finished = tally.started_at or end, tally.finished_at or end
    return list(summaries.values()), Timing(end - start, started - start, end - finished)


class _Tally:
    """Adds finished files into the split summaries and keeps the progress bar's total estimated."""

    def __init__(self, bar, summaries, n_jobs, skipped):
        self.bar, self.summaries, self.n_jobs, self.skipped, self.done = bar, summaries, n_jobs, skipped, 0
        self.started_at = self.finished_at = None
        if n_jobs:
            self.bar.set_postfix_str("starting", refresh=False)
        else:
            self._postfix()

    def started(self):
        """The workers are ready: the bar's clock (scenes/s) starts now, the start-up time is kept."""
        self.started_at = time.perf_counter()
        self.bar.reset()
        self._postfix()

    def finished(self):
        """The last file is done (the workers exit next): the bar stops with the conversion's rate."""
        self.finished_at = time.perf_counter()
        self.bar.close()

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
        s["cpu_seconds"] += result.cpu_seconds
        self.done += 1
        scenes = sum(t["scenes"] for t in self.summaries.values())
        self.bar.total = scenes if self.done == self.n_jobs else round(scenes / self.done * self.n_jobs)
        self._postfix()
        self.bar.refresh()


def _run_here(jobs, dataset, tally, full_check):
    global _progress
    if not _warmed_up:
        _warm_up()
    tally.started()
    _progress = tally
    try:
        for job in jobs:
            tally.file_done(*_convert_job(job, dataset, full_check))
    finally:
        _progress = None
    tally.finished()


def _run_pool(jobs, dataset, workers, tally, full_check):
    """Convert the jobs' files in `workers` processes, one file per process at a time. The workers first
    start (import TensorFlow, a few seconds) and wait for each other; then the files go."""
    # spawn, not fork: a fork of a process whose TensorFlow threads run can deadlock in the child
    context = multiprocessing.get_context("spawn")
    progress_queue, stop_event, started = context.Queue(), context.Event(), context.Barrier(workers)
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                               initargs=(progress_queue, stop_event, started))
    try:
        # one start task per worker: each blocks in the barrier until all have started, so each of
        # them runs in its own process (the pool starts a process per task while none is idle)
        starting = [pool.submit(_start_worker) for _ in range(workers)]
        done, _ = wait(starting, return_when=FIRST_EXCEPTION)
        for future in done:
            future.result()                                # a worker that could not start raises here
        tally.started()
        pending = {pool.submit(_convert_job, job, dataset, full_check) for job in jobs}
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(progress_queue, tally)
            for future in done:
                tally.file_done(*future.result())
        _drain(progress_queue, tally)
        tally.finished()
    except BrokenProcessPool:
        started.abort()
        pool.shutdown(wait=True, cancel_futures=True)
        raise ConversionError(f"a worker process died (killed, or out of memory?); run the same command "
                              f"again with fewer --workers than {workers}, "
                              f"finished shards are kept.") from None
    except BaseException:
        stop_event.set()                                   # running workers stop at their next batch
        started.abort()                                    # starting workers stop waiting for the others
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    # the workers exit (TensorFlow and torch take a moment to shut down)
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
                                            "shard format (see dataset/shards.py).")
    p.add_argument("dataset", help="one of: " + ", ".join(DATASETS))
    p.add_argument("--root", default=".",
                   help="folder holding <dataset>/{train,test}/*.tfrecord (default .)")
    p.add_argument("--out", default=None,
                   help="output folder, gets train/ and test/ (default <dataset>-torch)")
    p.add_argument("--splits", nargs="+", default=list(SPLITS), help="splits to convert (default train test)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="processes converting the files of a split in parallel (default min(4, cpu count))")
    p.add_argument("--full_check", action="store_true",
                   help="also decode every frame with PIL (the loader's decoder), much slower. The "
                        "default check reads every record (CRC) and checks its frame and camera counts, that "
                        "the cameras are finite and that every frame is a well-formed JPEG (markers from "
                        "start to end: truncation, not a JPEG, damaged headers) of the dataset's size with 3 "
                        "components, without decoding. --full_check adds damage inside a frame's compressed "
                        "image data that the decoder refuses; without it such a frame stops train.py later "
                        "with one sentence, or its scene is skipped with --skip_bad_scenes")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.dataset not in DATASETS:
        close = difflib.get_close_matches(args.dataset, DATASETS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise SystemExit(f"convert2torch.py: unknown dataset '{args.dataset}'; {hint}"
                         f"choose one of: {', '.join(DATASETS)}.")
    args.splits = list(dict.fromkeys(args.splits))        # "train train": once (twice doubled every count)
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
        summaries, timing = convert(args.root, args.dataset, args.splits, args.out, workers=args.workers,
                                    progress=not args.no_progress, full_check=args.full_check)
    except ConversionError as err:
        raise SystemExit(f"convert2torch.py: {err}") from None
    except KeyboardInterrupt:
        raise SystemExit("convert2torch.py: interrupted; finished shards are kept, run the same "
                         "command again to convert the rest.") from None
    for summary in summaries:
        print(_summary_line(args.dataset, summary))
    scenes = sum(s["scenes"] for s in summaries)
    converting = timing.seconds - timing.start_up - timing.shut_down
    print(f"total: {scenes} scenes in {timing.seconds:.1f} s: {timing.start_up:.1f} s starting, "
          f"{converting:.1f} s converting ({scenes / max(converting, 1e-9):.0f} scenes/s), "
          f"{timing.shut_down:.1f} s ending;"
          f" read {sum(s['bytes_in'] for s in summaries) / 1e6:.1f} MB,"
          f" wrote {sum(s['bytes_out'] for s in summaries) / 1e6:.1f} MB", flush=True)
    return summaries, timing.seconds


if __name__ == "__main__":
    main()
