"""Shepard-Metzler scenes like DeepMind's: random cube objects, a numpy ray caster, and the dataset writer.

A scene is one object of `parts` cubes joined face to face along a random self-avoiding path on
the integer lattice, centred at the origin, each cube its own saturated colour (random hue, HSV
saturation SATURATION = 0.875 and value VALUE = 1), flat-shaded per face by one directional light
plus ambient light (shade = AMBIENT + DIFFUSE * max(0, normal . LIGHT_DIR), AMBIENT = 0.62,
DIFFUSE = 0.38) on black, seen by S = 15 cameras at distance 3.333 from the origin, spread
uniformly over the sphere, each looking at the origin with world z as its up vector (no roll).
Images are 64x64, stored as JPEG.

Scale (documented choice): vertical field of view FOV_DEG = 45 degrees and cube edge CUBE_SIZE =
0.3675 world units (unit cubes would not fit the view at distance 3.333: a straight 5-cube bar would
reach to 0.8 units of the camera). Measured on the decoded JPEG frames of 200 scenes (3000 views;
object pixels: largest channel > 0.1), the larger side of the bounding box of the object's pixels
is, for 5 cubes, median 29 pixels of the 64 (5th to 95th percentile 22 to 38), for 7 cubes median
33 (25 to 46).

Look: CUBE_SIZE, AMBIENT, DIFFUSE and SATURATION are tuned so that frame_statistics of the built-in
5-cube frames matches REAL_SM5_STATISTICS, measured on DeepMind's shepard_metzler_5_parts frames.
On the decoded JPEG frames of 200 train scenes of seed 0 (3000 views), built-in vs real: coverage
(fraction of pixels whose largest channel > 0.1) 0.102 vs 0.108, mean pixel value 0.040 vs 0.042,
mean largest channel of the object's pixels 0.627 vs 0.62, mean bounding-box span 28.9 vs 27.6
pixels (7 cubes: 0.134, 0.053, 0.629, 34.2). The real objects fill their bounding box a little more
(coverage * 64^2 / span^2: 0.58 vs 0.50), so a cube size cannot match both coverage and span better
than about 5 % each; the real numbers come from two scenes only, whose means vary by 5 to 7 % from
pair to pair of scenes.

Camera, exactly the real data's convention: raw (x, y, z, yaw, pitch) with
pitch = asin(-z / r) and yaw = (-atan2(-y, -x)) mod 2 pi, so the viewing direction (-position / r) is
forward = (cos(pitch) cos(yaw), -cos(pitch) sin(yaw), sin(pitch)), right = (-sin(yaw), -cos(yaw), 0),
up = right x forward.

Determinism: scene i of split `split` with seed `seed` is drawn from
numpy.random.default_rng([seed, crc32(split), i]) only, so the bytes of a scene do not depend on the
number of workers or on which other scenes are rendered. JPEG quality JPEG_QUALITY = 90 (PIL, 4:2:0).

Speed: rays are cast only inside each view's projected bounding box of the object, 16 scenes per
vectorised call, and tune_malloc() stops glibc from returning and page-faulting the ray arrays'
memory on every batch; --workers 2 renders in two processes (its rate: README, "Data").

Command line:
    python dataset/shepard_metzler.py --out data/sm7 --parts 7 --train_scenes 20000 --test_scenes 2000
        --seed 0 [--views 15] [--workers 2] [--scenes_per_shard 1000] [--tfrecord --files_per_split 10]
writes data/sm7/train and data/sm7/test in the project's format (write_split), and with --tfrecord
also DeepMind-format files data/sm7/tfrecord/shepard_metzler_7_parts/{train,test}/<i>-of-<n>.tfrecord.
"""
import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import math

import numpy as np

from dataset.builtin import (JPEG_QUALITY, RenderError, add_output_arguments, camera_basis,  # noqa: F401
                             encode_jpeg, SPLITS, ensure_rendered, exit_on_render_error,
                             forward_from_yaw_pitch, hsv_to_rgb, iter_tasks, run_command, scene_rng,
                             tune_malloc, write_rendered_split)
from dataset.builtin import check_arguments as check_common_arguments

CAMERA_DISTANCE = 3.333
FOV_DEG = 45.0            # vertical (= horizontal, the images are square) field of view
CUBE_SIZE = 0.3675        # cube edge in world units (tuned to REAL_SM5_STATISTICS' coverage and span)
IMAGE_SIZE = 64
VIEWS = 15
AMBIENT = 0.62            # shade = AMBIENT + DIFFUSE * max(0, n . LIGHT_DIR)
DIFFUSE = 0.38
SATURATION = 0.875        # HSV saturation and value of every cube's colour (its hue is random)
VALUE = 1.0
LIGHT_DIR = np.array([0.45, 0.3, 0.84]) / np.linalg.norm([0.45, 0.3, 0.84])  # towards the light
RENDERER_VERSION = 2      # bump when a change alters the rendered bytes (invalidates cached datasets)
SCENES_PER_TASK = 16      # scenes rendered per vectorised call / per multiprocessing task

# the 6 face normals in the order (axis, sign): -x, +x, -y, +y, -z, +z
_NORMALS = np.array([[-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0], [0, 0, -1], [0, 0, 1]], dtype=np.float64)
_FACE_SHADE = (AMBIENT + DIFFUSE * np.maximum(0.0, _NORMALS @ LIGHT_DIR)).astype(np.float32)  # (6,)


# ----------------------------------------------------------------------------- camera convention

def camera_from_position(pos):
    """Positions (..., 3) -> raw DeepMind cameras (..., 5) = (x, y, z, yaw, pitch), float64."""
    pos = np.asarray(pos, dtype=np.float64)
    x, y, z = pos[..., 0], pos[..., 1], pos[..., 2]
    r = np.linalg.norm(pos, axis=-1)
    pitch = np.arcsin(np.clip(-z / r, -1.0, 1.0))
    yaw = np.mod(-np.arctan2(-y, -x), 2 * np.pi)
    return np.stack([x, y, z, yaw, pitch], axis=-1)


def position_from_yaw_pitch(yaw, pitch, r=CAMERA_DISTANCE):
    """Inverse of camera_from_position: (yaw, pitch, distance) -> position (..., 3), float64."""
    forward = forward_from_yaw_pitch(yaw, pitch)
    return -np.asarray(r, dtype=np.float64)[..., None] * forward


def camera_basis_from_position(pos):
    """(forward, right, up) computed from positions (..., 3) looking at the origin with world z up.

    Undefined straight above or below the origin (the renderer uses camera_basis, which is not)."""
    pos = np.asarray(pos, dtype=np.float64)
    forward = -pos / np.linalg.norm(pos, axis=-1, keepdims=True)
    right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    up = np.cross(right, forward)
    return forward, right, up


def project_points(points, cam_positions, image_size=IMAGE_SIZE, fov=FOV_DEG):
    """Pinhole projection of world points (N, 3) into V cameras -> (cols, rows, depth), each (V, N).

    Pixel (row i, col j) covers [j, j+1) x [i, i+1) in these continuous coordinates; row 0 is the top."""
    cam = camera_from_position(cam_positions)
    forward, right, up = camera_basis(cam[:, 3], cam[:, 4])                     # (V, 3) each
    rel = np.asarray(points, dtype=np.float64)[None] - cam[:, None, :3]          # (V, N, 3)
    depth = np.einsum("vnk,vk->vn", rel, forward)
    tan_half = math.tan(math.radians(fov) / 2)
    u = np.einsum("vnk,vk->vn", rel, right) / (depth * tan_half)                # in [-1, 1] across the image
    v = np.einsum("vnk,vk->vn", rel, up) / (depth * tan_half)
    cols = (u + 1) * image_size / 2
    rows = (1 - v) * image_size / 2
    return cols, rows, depth


# ----------------------------------------------------------------------------- objects

def random_object(rng, parts):
    """A random Shepard-Metzler object: (centres (P, 3) float64 in world units, colours (P, 3) float32
    in [0, 1]).

    The cubes follow a self-avoiding random walk on the integer lattice (each cube shares a face
    with the previous one), scaled by CUBE_SIZE and centred so the mean of the cube centres is the origin."""
    steps = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])
    while True:  # a walk can only trap itself for more than 7 parts; then draw again
        cells = [(0, 0, 0)]
        occupied = {cells[0]}
        for _ in range(parts - 1):
            last = cells[-1]
            free = [tuple(int(a + b) for a, b in zip(last, s)) for s in steps]
            free = [c for c in free if c not in occupied]
            if not free:
                break
            cell = free[rng.integers(len(free))]
            cells.append(cell)
            occupied.add(cell)
        if len(cells) == parts:
            break
    centres = np.array(cells, dtype=np.float64)
    centres = (centres - centres.mean(axis=0)) * CUBE_SIZE
    hues = rng.random(parts)
    colours = hsv_to_rgb(hues, SATURATION, VALUE)
    return centres, colours


def random_cameras(rng, views, r=CAMERA_DISTANCE):
    """Camera positions (views, 3) float64 uniform on the sphere of radius r."""
    d = rng.standard_normal((views, 3))
    n = np.linalg.norm(d, axis=1, keepdims=True)
    while np.any(n < 1e-9):  # practically never; keeps the direction defined
        d = rng.standard_normal((views, 3))
        n = np.linalg.norm(d, axis=1, keepdims=True)
    return d / n * r


def random_scene(seed, split, index, parts, views=VIEWS):
    """(centres (P, 3), colours (P, 3), camera positions (V, 3)) of one scene."""
    rng = scene_rng(seed, split, index)
    centres, colours = random_object(rng, parts)
    positions = random_cameras(rng, views)
    return centres, colours, positions


# ----------------------------------------------------------------------------- renderer

def render_views(cubes, colors, cam_positions, image_size=IMAGE_SIZE, fov=FOV_DEG, cube_size=CUBE_SIZE):
    """Ray-cast axis-aligned cubes into V views -> uint8 images (V, H, W, 3).

    cubes: (P, 3) cube centres, colors: (P, 3) in [0, 1] (floats) or [0, 255] (uint8),
    cam_positions: (V, 3), each camera looking at the origin with world z up."""
    images, = render_batch([cubes], [colors], [cam_positions], image_size, fov, cube_size)
    return images


def render_batch(cubes_list, colors_list, positions_list, image_size=IMAGE_SIZE, fov=FOV_DEG,
                 cube_size=CUBE_SIZE):
    """render_views for many objects in one vectorised pass -> list of uint8 (V_b, H, W, 3).

    Only rays inside each view's projected bounding box of the object are cast (the rest is black);
    ray/box intersection by the slab method, nearest hit wins (occlusion), flat shading per face."""
    n_obj = len(cubes_list)
    if n_obj == 0:
        return []
    counts = [len(p) for p in positions_list]
    n_parts = [len(c) for c in cubes_list]
    n_cubes = max(n_parts)
    size = np.float32(cube_size)
    # pad every object to n_cubes cubes (extra cubes are copies of the first: harmless duplicates)
    bmin = np.empty((n_obj, n_cubes, 3), dtype=np.float32)
    cols = np.empty((n_obj, n_cubes, 3), dtype=np.float32)
    for b, (c, k) in enumerate(zip(cubes_list, colors_list)):
        c = np.asarray(c, dtype=np.float64)
        k = np.asarray(k)
        k = k.astype(np.float32) / 255.0 if k.dtype == np.uint8 else k.astype(np.float32)
        pad = np.concatenate([np.arange(len(c)), np.zeros(n_cubes - len(c), dtype=np.int64)])
        bmin[b] = c[pad] - cube_size / 2
        cols[b] = k[pad]
    # (V, 3)
    positions = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 3) for p in positions_list])
    obj_of_view = np.repeat(np.arange(n_obj), counts)                                          # (V,)
    n_views = len(positions)
    images = np.zeros((n_views, image_size, image_size, 3), dtype=np.uint8)
    if n_views == 0:
        return np.split(images, np.cumsum(counts)[:-1])

    # camera frames and the projected bounding box of each object's cube corners
    cam = camera_from_position(positions)
    forward, right, up = camera_basis(cam[:, 3], cam[:, 4])
    corner_offsets = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)],
                              dtype=np.float64) * cube_size
    corners = (bmin.astype(np.float64)[:, :, None, :] + corner_offsets).reshape(n_obj, -1, 3)  # (B, 8P, 3)
    rel = corners[obj_of_view] - positions[:, None, :]                                       # (V, 8P, 3)
    depth = np.einsum("vnk,vk->vn", rel, forward)
    tan_half = math.tan(math.radians(fov) / 2)
    in_front = np.all(depth > 1e-6, axis=1)                                                   # (V,)
    safe_depth = np.where(depth > 1e-6, depth, 1.0) * tan_half
    px = (np.einsum("vnk,vk->vn", rel, right) / safe_depth + 1) * image_size / 2
    py = (1 - np.einsum("vnk,vk->vn", rel, up) / safe_depth) * image_size / 2
    j0 = np.where(in_front, np.clip(np.floor(px.min(1)), 0, image_size), 0).astype(np.int64)
    j1 = np.where(in_front, np.clip(np.ceil(px.max(1)), 0, image_size), image_size).astype(np.int64)
    i0 = np.where(in_front, np.clip(np.floor(py.min(1)), 0, image_size), 0).astype(np.int64)
    i1 = np.where(in_front, np.clip(np.ceil(py.max(1)), 0, image_size), image_size).astype(np.int64)
    w = np.maximum(j1 - j0, 0)
    n_rays = w * np.maximum(i1 - i0, 0)                                                       # (V,)
    total = int(n_rays.sum())
    if total == 0:
        return np.split(images, np.cumsum(counts)[:-1])

    # one ray per pixel centre inside the boxes; rays are grouped by view, views by object
    view = np.repeat(np.arange(n_views), n_rays)                                              # (R,)
    local = np.arange(total) - np.repeat(np.cumsum(n_rays) - n_rays, n_rays)
    wv = np.repeat(np.maximum(w, 1), n_rays)
    row = np.repeat(i0, n_rays) + local // wv
    col = np.repeat(j0, n_rays) + local % wv
    su = ((col.astype(np.float32) + 0.5) * (2.0 / image_size) - 1.0) * np.float32(tan_half)   # (R,)
    sv = (1.0 - (row.astype(np.float32) + 0.5) * (2.0 / image_size)) * np.float32(tan_half)
    per_ray = lambda a: np.repeat(a.astype(np.float32), n_rays)                               # (V,) -> (R,)
    # per axis a: direction d_a, 1/d_a, and the slab offsets. For a cube with min corner m the ray
    # enters the slab of axis a at t = m*inv_a + near_a and leaves at t = m*inv_a + far_a, with
    # near_a = min(0, size*inv_a) - o_a*inv_a and far_a = max(0, size*inv_a) - o_a*inv_a
    d, inv, near, far = [], [], [], []
    for a in range(3):
        d_a = per_ray(forward[:, a]) + su * per_ray(right[:, a]) + sv * per_ray(up[:, a])
        d_a[np.abs(d_a) < 1e-12] = np.float32(1e-12)
        inv_a = np.float32(1.0) / d_a
        o_inv = per_ray(positions[:, a]) * inv_a
        s_inv = size * inv_a
        d.append(d_a)
        inv.append(inv_a)
        near.append(np.minimum(s_inv, 0) - o_inv)
        far.append(np.maximum(s_inv, 0) - o_inv)
    # a camera near the object: ignore boxes behind the ray's origin
    check_behind = not bool(np.all(in_front))
    best_t = np.full(total, np.inf, dtype=np.float32)
    best_k = np.zeros(total, dtype=np.int8 if n_cubes < 128 else np.int32)
    ray_bounds = np.concatenate([[0], np.cumsum(np.bincount(obj_of_view, weights=n_rays, minlength=n_obj))])
    for b in range(n_obj):
        r0, r1 = int(ray_bounds[b]), int(ray_bounds[b + 1])
        if r1 == r0 or n_parts[b] == 0:
            continue
        _cast_object(bmin[b, :n_parts[b]], [x[r0:r1] for x in inv], [x[r0:r1] for x in near],
                     [x[r0:r1] for x in far], best_t[r0:r1], best_k[r0:r1], check_behind)
    ray = np.nonzero(np.isfinite(best_t))[0]
    if len(ray) == 0:
        return np.split(images, np.cumsum(counts)[:-1])
    # the face that was hit: the axis whose slab the ray entered last; its normal opposes the ray
    obj = obj_of_view[view[ray]]
    kk = best_k[ray].astype(np.int64)
    m_hit = bmin[obj, kk]                                                                     # (H, 3)
    t_axes = np.stack([m_hit[:, a] * inv[a][ray] + near[a][ray] for a in range(3)], axis=1)  # (H, 3)
    axis = np.argmax(t_axes, axis=1)
    d_hit = np.stack([d[a][ray] for a in range(3)], axis=1)
    positive = d_hit[np.arange(len(ray)), axis] < 0
    shade = _FACE_SHADE[axis * 2 + positive]
    colour = cols[obj, kk] * shade[:, None]
    images[view[ray], row[ray], col[ray]] = (colour * 255.0 + 0.5).astype(np.uint8)
    return np.split(images, np.cumsum(counts)[:-1])


def _cast_object(bmin, inv, near, far, best_t, best_k, check_behind):
    """Slab test of one object's cubes (P, 3 min corners) against its rays; updates best_t / best_k in place.

    inv, near, far: per axis (R,) float32 (see render_batch); best_t (R,) float32, best_k (R,) integers."""
    n = len(best_t)
    q, tn, tf, tmp = (np.empty(n, dtype=np.float32) for _ in range(4))
    hit, closer = np.empty(n, dtype=bool), np.empty(n, dtype=bool)
    for k, m in enumerate(bmin.astype(np.float32)):
        np.multiply(inv[0], m[0], out=q)
        np.add(q, near[0], out=tn)
        np.add(q, far[0], out=tf)
        for a in (1, 2):
            np.multiply(inv[a], m[a], out=q)
            np.add(q, near[a], out=tmp)
            np.maximum(tn, tmp, out=tn)
            np.add(q, far[a], out=tmp)
            np.minimum(tf, tmp, out=tf)
        np.less(tn, tf, out=hit)
        if check_behind:
            np.logical_and(hit, tf > 0, out=hit)
        np.less(tn, best_t, out=closer)
        np.logical_and(hit, closer, out=hit)
        np.copyto(best_t, tn, where=hit)
        np.copyto(best_k, k, where=hit)


def render_scenes(seed, split, start, stop, parts, views=VIEWS):
    """Scenes start..stop-1 of a split -> list of (frames: list of `views` JPEG bytes, cameras float32
    (views, 5))."""
    scenes = [random_scene(seed, split, i, parts, views) for i in range(start, stop)]
    images = render_batch([s[0] for s in scenes], [s[1] for s in scenes], [s[2] for s in scenes])
    out = []
    for (_, _, positions), imgs in zip(scenes, images):
        cameras = camera_from_position(positions).astype(np.float32)
        out.append(([encode_jpeg(im) for im in imgs], cameras))
    return out


def _render_task(args):
    return render_scenes(*args)


def iter_scenes(seed, split, n_scenes, parts, views=VIEWS, workers=1):
    """Yield the n_scenes scenes of a split in order, rendered by `workers` processes."""
    tasks = [(seed, split, s, min(s + SCENES_PER_TASK, n_scenes), parts, views)
             for s in range(0, n_scenes, SCENES_PER_TASK)]
    return iter_tasks(_render_task, tasks, workers)


# ----------------------------------------------------------------------------- frame statistics

OBJECT_THRESHOLD = 0.1    # a pixel is "object" when its largest channel, in [0, 1], exceeds this

# Statistics of DeepMind's real shepard_metzler_5_parts frames, measured with frame_statistics on the
# decoded JPEG frames of two real scenes (30 frames). The built-in scenes are tuned to match them.
REAL_SM5_STATISTICS = dict(coverage=0.108, mean_pixel=0.042, object_max_channel_mean=0.62, span_px=27.6)


def frame_statistics(images, threshold=OBJECT_THRESHOLD):
    """How the object looks in frames (..., H, W, 3), channels last: uint8 in [0, 255] (divided by 255)
    or floats in [0, 1]; any leading dimensions (views, scenes) are frames. Returns a dict of floats:

    coverage: fraction of all pixels whose largest channel > threshold (the object's pixels),
    mean_pixel: mean over all pixels and channels,
    object_max_channel_mean: mean over the object's pixels (of all frames) of their largest channel,
    span_px: mean over frames of the larger side, in pixels, of the bounding box of the object's
    pixels (frames without object pixels are left out; 0.0 when no frame has any)."""
    images = np.asarray(images)
    if images.ndim < 3 or images.shape[-1] != 3:
        raise ValueError(f"frame_statistics expects frames (..., H, W, 3), got shape {images.shape}")
    x = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    x = x.reshape((-1,) + x.shape[-3:])                                    # (N, H, W, 3)
    top = x.max(axis=-1)                                                   # (N, H, W)
    mask = top > threshold
    n_object = int(mask.sum())
    rows, cols = mask.any(axis=2), mask.any(axis=1)                        # (N, H), (N, W)
    seen = rows.any(axis=1)
    h, w = rows.shape[1], cols.shape[1]

    def extent(m, n):  # last - first + 1 of the True entries of each row of m (N, n)
        return n - np.argmax(m[:, ::-1], axis=1) - np.argmax(m, axis=1)

    spans = np.maximum(extent(rows, h), extent(cols, w))[seen]
    return dict(coverage=float(mask.mean()), mean_pixel=float(x.mean()),
                object_max_channel_mean=float(top[mask].mean()) if n_object else 0.0,
                span_px=float(spans.mean()) if len(spans) else 0.0)


# ----------------------------------------------------------------------------- writing datasets

def dataset_name(parts):
    """DeepMind's name of the dataset with objects of `parts` cubes."""
    return f"shepard_metzler_{parts}_parts"


def builtin_root(data_root, parts):
    """The folder of the built-in scenes of `parts` cubes under data_root (train/ and test/ inside)."""
    return os.path.join(data_root, dataset_name(parts))


def render_parameters(parts, train_scenes, test_scenes, seed, views=VIEWS):
    """Everything that decides the rendered bytes (what DONE.json records and compares)."""
    return {"generator": "dataset/shepard_metzler.py", "renderer_version": RENDERER_VERSION,
            "dataset": dataset_name(parts), "parts": int(parts), "train_scenes": int(train_scenes),
            "test_scenes": int(test_scenes), "seed": int(seed), "views": int(views), "image_size": IMAGE_SIZE,
            "fov_deg": FOV_DEG, "cube_size": CUBE_SIZE, "camera_distance": CAMERA_DISTANCE,
            "jpeg_quality": JPEG_QUALITY}


def _check_arguments(parts, views, workers, scenes_per_shard, counts, seed=0):
    if parts < 1:
        raise RenderError(f"--parts is {parts}; "
                          f"pass a positive number of cubes (DeepMind's data uses 5 or 7).")
    if views < 1:
        raise RenderError(f"--views is {views}; pass a positive number of views (DeepMind's data uses 15).")
    check_common_arguments(workers, scenes_per_shard, counts, seed)


def render_split(split_dir, split, n_scenes, parts, seed, views=VIEWS, workers=1, scenes_per_shard=1000,
                 tfrecord_dir=None, files_per_split=10, progress=None):
    """Render one split into split_dir (write_split) and, when tfrecord_dir is given, also as
    DeepMind TFRecord files tfrecord_dir/<i>-of-<n>.tfrecord (n = files_per_split, at most n_scenes).

    progress: a tqdm bar to advance by one per scene, or None. Returns the number of scenes written."""
    return write_rendered_split(split_dir, iter_scenes(seed, split, n_scenes, parts, views, workers),
                                n_scenes, {"dataset": dataset_name(parts), "seed": int(seed), "split": split},
                                scenes_per_shard, tfrecord_dir, files_per_split, progress)


def ensure_builtin_dataset(root, parts=5, train_scenes=20000, test_scenes=1000, seed=0, workers=None,
                           views=VIEWS, scenes_per_shard=1000, progress=True, splits=SPLITS):
    """Render a Shepard-Metzler dataset's `splits` into root/train and root/test once, and reuse them
    afterwards (dataset/builtin.py ensure_rendered: markers, a lock, safe against a killed render).
    Returns (train_dir, test_dir)."""
    workers = min(2, os.cpu_count() or 1) if workers is None else int(workers)
    _check_arguments(parts, views, workers, scenes_per_shard,
                     {"train_scenes": train_scenes, "test_scenes": test_scenes}, seed)
    return ensure_rendered(root, render_parameters(parts, train_scenes, test_scenes, seed, views),
                           train_scenes, test_scenes,
                           lambda split_dir, split, n, tfrecord_dir, bar: render_split(
                               split_dir, split, n, parts, seed, views, workers, scenes_per_shard,
                               progress=bar),
                           progress, "Shepard-Metzler", splits)


# ----------------------------------------------------------------------------- command line

def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Render a Shepard-Metzler dataset like DeepMind's gqn-datasets.")
    p.add_argument("--parts", type=int, default=7, help="cubes per object (DeepMind: 5 or 7)")
    p.add_argument("--views", type=int, default=VIEWS, help="views per scene")
    add_output_arguments(p, "shepard_metzler_<parts>_parts")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    tune_malloc()       # this process is ours: with --workers 1 it renders

    def work():
        _check_arguments(args.parts, args.views, args.workers, args.scenes_per_shard,
                         {"train_scenes": args.train_scenes, "test_scenes": args.test_scenes}, args.seed)
        return run_command(args, dataset_name(args.parts),
                           lambda split_dir, split, n, tfrecord_dir, bar: render_split(
                               split_dir, split, n, args.parts, args.seed, args.views, args.workers,
                               args.scenes_per_shard, tfrecord_dir, args.files_per_split, bar))

    total, seconds = exit_on_render_error(work)
    print(f"wrote {total} scenes of {args.parts} cubes x {args.views} views to {args.out} "
          f"in {seconds:.1f} s: {total / max(seconds, 1e-9):.0f} scenes/s with {args.workers} worker(s)")


if __name__ == "__main__":
    main()
