"""What the built-in scene renderers (dataset/shepard_metzler.py, dataset/rooms.py) share.

The camera convention of DeepMind's raw cameras (x, y, z, yaw, pitch), radians:
    forward = (cos(pitch) cos(yaw), -cos(pitch) sin(yaw), sin(pitch)),
    right = (-sin(yaw), -cos(yaw), 0), up = right x forward (no roll; world z is up).

Writing a dataset: scene i of split `split` with seed `seed` comes from scene_rng(seed, split, i) only,
scenes are rendered in tasks by `workers` processes (iter_tasks), written through the project's
shard writer (write_rendered_split: dataset/shards.py, optionally DeepMind TFRecords and per-shard
label files, dataset/labels.py), first into a hidden staging folder and moved into place when
whole (render_staged, move_into_place). ensure_rendered renders a built-in dataset once into a
cache folder and marks it complete with DONE.json; run_command is the renderers' shared command line.
"""
import io
import json
import math
import multiprocessing
import os
import shutil
import time
import zlib

import numpy as np
from PIL import Image

JPEG_QUALITY = 90         # PIL, 4:2:0


class RenderError(Exception):
    """A user-facing problem with the renderer's inputs or output folder (one clear sentence)."""


# ----------------------------------------------------------------------------- camera convention

def forward_from_yaw_pitch(yaw, pitch):
    """Unit viewing direction (..., 3) of cameras with the given yaw and pitch (radians)."""
    yaw = np.asarray(yaw, dtype=np.float64)
    pitch = np.asarray(pitch, dtype=np.float64)
    cp = np.cos(pitch)
    return np.stack([cp * np.cos(yaw), -cp * np.sin(yaw), np.sin(pitch)], axis=-1)


def camera_basis(yaw, pitch):
    """(forward, right, up), each (..., 3): the camera frame for yaw/pitch, no roll (up is in the plane of
    world z)."""
    yaw = np.asarray(yaw, dtype=np.float64)
    forward = forward_from_yaw_pitch(yaw, pitch)
    right = np.stack([-np.sin(yaw), -np.cos(yaw), np.zeros_like(yaw)], axis=-1)
    up = np.cross(right, forward)
    return forward, right, up


def camera_rays(cameras, image_size, fov):
    """Unit ray directions through the pixel centres of each camera -> (dx, dy, dz), each float32 (V, H*W),
    pixels row-major from the top-left."""
    cameras = np.asarray(cameras, dtype=np.float64).reshape(-1, 5)
    forward, right, up = (b.astype(np.float32) for b in camera_basis(cameras[:, 3], cameras[:, 4]))
    tan_half = math.tan(math.radians(fov) / 2)
    s = (((np.arange(image_size) + 0.5) * (2.0 / image_size) - 1.0) * tan_half).astype(np.float32)
    su = np.tile(s, image_size)[None]                 # (1, H*W) across, left to right
    sv = -np.repeat(s, image_size)[None]              # (1, H*W) up, top row first
    d = [forward[:, k:k + 1] + su * right[:, k:k + 1] + sv * up[:, k:k + 1] for k in range(3)]
    norm = np.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
    return tuple(c / norm for c in d)


# ----------------------------------------------------------------------------- scenes and frames

def hsv_to_rgb(hues, saturation=1.0, value=1.0):
    """Hues (P,) in [0, 1) at the given saturation and value -> RGB (P, 3) float32 in [0, 1].

    The largest channel is `value`, the smallest value * (1 - saturation)."""
    h6 = np.asarray(hues, dtype=np.float64) * 6.0
    # each channel is a clipped triangle wave of the hue: R peaks at 0, G at 1/3, B at 2/3
    rgb = np.stack([np.abs(h6 - 3.0) - 1.0, 2.0 - np.abs(h6 - 2.0), 2.0 - np.abs(h6 - 4.0)], axis=-1)
    rgb = value * (1.0 - saturation * (1.0 - np.clip(rgb, 0.0, 1.0)))
    return rgb.astype(np.float32)


def scene_rng(seed, split, index):
    """The random generator of one scene, a function of (seed, split, scene index) only."""
    return np.random.default_rng([int(seed), zlib.crc32(split.encode("utf-8")), int(index)])


def encode_jpeg(image, quality=JPEG_QUALITY):
    """uint8 (H, W, 3) -> JPEG bytes."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def tune_malloc():
    """Make glibc keep freed memory in this process's heap (call only in a process that renders).

    By default glibc hands the ray arrays' memory back to the system after every batch and page-faults
    it in again for the next one, and those faults cost rendering time."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        # M_TRIM_THRESHOLD: keep up to 256 MiB of free heap
        libc.mallopt(-1, 256 << 20)
        # M_MMAP_THRESHOLD: blocks below 32 MiB (glibc's maximum) come from the heap
        libc.mallopt(-3, 32 << 20)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def iter_tasks(render_task, tasks, workers=1, always_spawn=False):
    """Yield the items of render_task(task) for each task in order, computed by `workers` processes (with
    always_spawn, in spawned processes even for one worker: never in this one).

    render_task must be a module-level function (it is sent to spawned processes by name)."""
    if (workers <= 1 or len(tasks) <= 1) and not always_spawn:
        for t in tasks:
            yield from render_task(t)
        return
    # spawn, not fork: the caller (the training script) may already run torch's threads
    with multiprocessing.get_context("spawn").Pool(max(1, workers), initializer=tune_malloc) as pool:
        for chunk in pool.imap(render_task, tasks):
            yield from chunk


# ----------------------------------------------------------------------------- writing splits

def check_arguments(workers, scenes_per_shard, counts, seed=0):
    """The checks every renderer's options share; counts: {flag name: number of scenes}."""
    if workers < 1:
        raise RenderError(f"--workers is {workers}; pass 1 or more processes.")
    if scenes_per_shard < 1:
        raise RenderError(f"--scenes_per_shard is {scenes_per_shard}; pass a positive number.")
    if seed < 0:
        raise RenderError(f"--seed is {seed}; pass 0 or a positive integer.")
    for name, n in counts.items():
        if n < 0:
            raise RenderError(f"--{name} is {n}; pass 0 or more scenes.")


def write_rendered_split(split_dir, scenes, n_scenes, extra_header, scenes_per_shard=1000, tfrecord_dir=None,
                         files_per_split=10, progress=None, label_scheme=None):
    """Write rendered scenes into split_dir (write_split) and, when tfrecord_dir is given, also as
    DeepMind TFRecord files tfrecord_dir/<i>-of-<n>.tfrecord (n = files_per_split, at most n_scenes).

    scenes: iterable of (frames, cameras) or (frames, cameras, labels), labels uint8 (S, H, W); scenes
    with labels also get a label file beside each shard (dataset/labels.py), in label_scheme (None: the
    rooms' scheme). progress: a tqdm bar to advance by one per scene, or None. Returns the number of scenes
    written."""
    from dataset.labels import ROOMS_SCHEME, labels_name, write_labels
    from dataset.shards import write_split
    from dataset.tfrecord import TFRecordWriter, encode_gqn_example, tfrecord_name

    files = max(1, min(files_per_split, n_scenes))
    state = {"writer": None, "file": 0}
    pending = []                              # the labels of the shard being filled

    def flush_labels(shard):
        write_labels(os.path.join(split_dir, labels_name(shard)), pending, label_scheme or ROOMS_SCHEME)
        pending.clear()

    def shard_scenes():
        for i, scene in enumerate(scenes):
            frames, cameras = scene[0], scene[1]
            if tfrecord_dir is not None:
                file = i * files // n_scenes + 1  # scenes split into `files` contiguous, near-equal runs
                if file != state["file"]:
                    if state["writer"] is not None:
                        state["writer"].close()
                    state["writer"] = TFRecordWriter(os.path.join(tfrecord_dir, tfrecord_name(file, files)))
                    state["file"] = file
                state["writer"].write(encode_gqn_example(frames, cameras))
            if len(scene) > 2:
                pending.append(scene[2])
                if len(pending) == scenes_per_shard:     # the shard write_split is about to write
                    flush_labels(i // scenes_per_shard)
            if progress is not None:
                progress.update(1)
            yield frames, cameras

    try:
        written = write_split(split_dir, shard_scenes(), scenes_per_shard=scenes_per_shard,
                              extra_header=extra_header)
        if pending:
            flush_labels((written - 1) // scenes_per_shard)
        if state["writer"] is not None:
            state["writer"].close()
    except BaseException:
        if state["writer"] is not None:
            state["writer"].abort()
        raise
    return written


def progress_bar(total, enabled):
    """A tqdm bar counting scenes, or None when not enabled."""
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, unit="scene", desc="rendering", dynamic_ncols=True)


def holds_only_shards(folder):
    """True when a folder holds nothing but shard files, their label files, and temporary files of
    interrupted writes."""
    from dataset.labels import LABELS_PATTERN
    from dataset.shards import SHARD_PATTERN
    return all(SHARD_PATTERN.fullmatch(name) or LABELS_PATTERN.fullmatch(name)
               or (name.startswith(".") and ".tmp-" in name) for name in os.listdir(folder))


def clear_split(folder, flag_hint):
    """Remove the shards of a split folder about to be rewritten, refusing a folder that holds other files."""
    if not os.path.exists(folder):
        return
    if not os.path.isdir(folder) or not holds_only_shards(folder):
        raise RenderError(f"{folder} holds files that are not dataset shards; {flag_hint}.")
    shutil.rmtree(folder)


def render_staged(staging, splits, render_one, progress):
    """Render the splits [(name, scenes)] into staging/<name> after removing what a killed render left
    there; the caller moves them into place. render_one(split_dir, split, n_scenes, tfrecord_dir, bar)
    renders one split, its TFRecords into tfrecord_dir = staging/tfrecord/<name>. Returns the seconds."""
    if os.path.exists(staging):
        shutil.rmtree(staging)
    bar = progress_bar(sum(n for _, n in splits), progress)
    start = time.perf_counter()
    try:
        for split, n in splits:
            render_one(os.path.join(staging, split), split, n, os.path.join(staging, "tfrecord", split), bar)
    finally:
        if bar is not None:
            bar.close()
    return time.perf_counter() - start


def move_into_place(src, dst):
    """A rendered split from the staging folder to dst (absent by now), creating dst's parent folders."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    os.replace(src, dst)


SPLITS = ("train", "test")


def split_parameters(params, split):
    """What decides the bytes of one split: scene i of a split comes from (seed, split, i) alone, so the
    other split's count does not enter."""
    other = [s for s in SPLITS if s != split]
    return dict({k: v for k, v in params.items() if k not in {f"{s}_scenes" for s in other}}, split=split)


def ensure_rendered(root, params, train_scenes, test_scenes, render_one, progress=True, what="built-in",
                    splits=SPLITS):
    """Render the `splits` of a built-in dataset into root/train and root/test once, and reuse them
    afterwards.

    params: everything that decides the rendered bytes (JSON-able). A split is complete when root/DONE.json
    (both splits) or root/DONE-<split>.json (that split alone) records the same parameters, as far as they
    concern it (split_parameters); a split rendered alone is the same bytes as one rendered with the other.
    A split that is not complete is rendered into a hidden root/.rendering folder (render_one as for
    render_staged), moved into place, and its marker written last: a folder without one is never taken
    as complete, so a later call that needs the other split renders that one and trusts nothing else.
    When both splits are complete, DONE.json replaces the two markers. A lock file (root/.lock) makes
    concurrent callers wait for one render. Returns (train_dir, test_dir)."""
    import fcntl

    root = os.fspath(root)
    counts = {"train": train_scenes, "test": test_scenes}
    if any(counts[s] < 1 for s in splits):
        raise RenderError(f"the built-in dataset needs at least one train and one test scene "
                          f"(got {train_scenes} and {test_scenes}); pass positive counts.")
    folders = {s: os.path.join(root, s) for s in SPLITS}
    done_path = os.path.join(root, "DONE.json")
    marker = {s: os.path.join(root, f"DONE-{s}.json") for s in SPLITS}
    try:
        os.makedirs(root, exist_ok=True)
        lock = open(os.path.join(root, ".lock"), "a")
    except OSError as error:
        raise RenderError(f"cannot create the dataset folder {root} ({error.strerror}); "
                          f"pass a writable folder.") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        both = read_done(done_path)

        def complete(split, by_both=True):
            wanted = split_parameters(params, split)
            return os.path.isdir(folders[split]) and (
                (by_both and both is not None and split_parameters(both, split) == wanted)
                or read_done(marker[split]) == wanted)

        missing = [s for s in splits if not complete(s)]
        if missing:
            # DONE.json is about to be stale: what it vouches for keeps a marker of its own
            if both is not None:
                for split in SPLITS:
                    if split not in missing and complete(split) and not complete(split, by_both=False):
                        write_json_atomic(marker[split], split_parameters(params, split))
                os.remove(done_path)
            hint = f"move them away or pass another dataset folder than {root}"
            for split in missing:  # refuse before spending time on rendering
                folder = folders[split]
                if os.path.exists(folder) and (not os.path.isdir(folder) or not holds_only_shards(folder)):
                    raise RenderError(f"{folder} holds files that are not dataset shards; {hint}.")
            staging = os.path.join(root, ".rendering")
            for split in missing:
                if os.path.exists(marker[split]):
                    os.remove(marker[split])
            seconds = render_staged(staging, [(s, counts[s]) for s in missing],
                                    lambda d, split, n, tf_dir, bar: render_one(d, split, n, None, bar),
                                    progress)
            for split in missing:
                clear_split(folders[split], hint)
                move_into_place(os.path.join(staging, split), folders[split])
                write_json_atomic(marker[split],
                                  dict(split_parameters(params, split), seconds=round(seconds, 2)))
            os.rmdir(staging)
            if progress:
                n = sum(counts[s] for s in missing)
                print(f"rendered {n} {what} scenes ({' and '.join(missing)}) into {root} "
                      f"at {n / seconds:.0f} scenes/s")
        if all(complete(s, by_both=False) for s in SPLITS):
            write_json_atomic(done_path, params)
            for split in SPLITS:
                os.remove(marker[split])
    return folders["train"], folders["test"]


def read_done(path):
    """The parameters recorded in DONE.json (without the timing), or None when absent or unreadable."""
    try:
        with open(path) as f:
            done = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(done, dict):
        return None
    done.pop("seconds", None)
    return done


def write_json_atomic(path, obj):
    """Write obj as JSON through a temporary file renamed into place."""
    from dataset.atomic import write_file_atomic
    write_file_atomic(path, [json.dumps(obj, indent=1).encode("utf-8")])


# ----------------------------------------------------------------------------- command line

def add_output_arguments(parser, tfrecord_folder, scenes_per_shard=1000):
    """The renderers' shared options; tfrecord_folder names OUT/tfrecord/<dataset> in --tfrecord's help."""
    parser.add_argument("--out", required=True,
                        help="output folder: OUT/train and OUT/test (and OUT/tfrecord)")
    parser.add_argument("--train_scenes", type=int, default=20000)
    parser.add_argument("--test_scenes", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="rendering processes")
    parser.add_argument("--scenes_per_shard", type=int, default=scenes_per_shard)
    parser.add_argument("--tfrecord", action="store_true",
                        help=f"also write DeepMind-format TFRecords to "
                             f"OUT/tfrecord/{tfrecord_folder}/{{train,test}}")
    parser.add_argument("--files_per_split", type=int, default=10,
                        help="TFRecord files per split (with --tfrecord)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the shards of an earlier run in OUT")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")


def run_command(args, dataset, render_one):
    """The command line's work once the renderer's own options are checked: refuse an occupied --out
    without --overwrite, render the splits with counts > 0 into OUT/.rendering (render_one as for
    render_staged; tfrecord_dir None without --tfrecord) and move them into place. A killed render
    leaves no split that looks whole, and --overwrite keeps the earlier data until the new data are
    complete. Returns (scenes written, seconds)."""
    check_arguments(args.workers, args.scenes_per_shard,
                    {"train_scenes": args.train_scenes, "test_scenes": args.test_scenes}, args.seed)
    if args.files_per_split < 1:
        raise RenderError(f"--files_per_split is {args.files_per_split}; pass a positive number.")
    splits = [(s, n) for s, n in (("train", args.train_scenes), ("test", args.test_scenes)) if n > 0]
    tf_root = os.path.join(args.out, "tfrecord", dataset)
    for split, _ in splits:
        folders = [os.path.join(args.out, split)] + ([os.path.join(tf_root, split)] if args.tfrecord else [])
        for folder in folders:  # checked before rendering; replaced only after it
            if os.path.exists(folder) and not os.path.isdir(folder):
                raise RenderError(f"{folder} is a file, not a folder; move it away or choose another --out.")
            if os.path.isdir(folder) and os.listdir(folder):
                if not args.overwrite:
                    raise RenderError(f"{folder} is not empty; pass --overwrite to replace its contents "
                                      f"or choose another --out.")
                if folder.startswith(tf_root):
                    if not all(n.endswith(".tfrecord") for n in os.listdir(folder)):
                        raise RenderError(f"{folder} holds files that are not TFRecords; move them away.")
                elif not holds_only_shards(folder):
                    raise RenderError(f"{folder} holds files that are not dataset shards; move them away "
                                      f"or choose another --out.")
    staging = os.path.join(args.out, ".rendering")
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as error:
        raise RenderError(f"cannot create the output folder {args.out} ({error.strerror}); "
                          f"pass a writable --out.") from None
    seconds = render_staged(staging, splits, lambda d, split, n, tf_dir, bar:
                            render_one(d, split, n, tf_dir if args.tfrecord else None, bar),
                            not args.no_progress)
    for split, _ in splits:
        moves = [(os.path.join(staging, split), os.path.join(args.out, split))]
        if args.tfrecord:
            moves.append((os.path.join(staging, "tfrecord", split), os.path.join(tf_root, split)))
        for src, dst in moves:
            if os.path.exists(dst):
                shutil.rmtree(dst)
            move_into_place(src, dst)
    shutil.rmtree(staging)
    return sum(n for _, n in splits), seconds


def exit_on_render_error(work):
    """Run work(); a RenderError ends the program with its one sentence (no traceback)."""
    try:
        return work()
    except RenderError as error:
        raise SystemExit(f"error: {error}") from None
