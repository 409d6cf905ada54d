"""Rooms like DeepMind's rooms_ring_camera and rooms_free_camera_*: random objects in a square room, a numpy
ray caster, the writer.

Scene (DeepMind's description of rooms_ring_camera, gqn-datasets): a square room of 7x7 units
(walls at x, y = +-ROOM_HALF, floor at z = 0, walls WALL_HEIGHT high, a pale sky above them); the
walls' texture is one of 5 (red, green, cerise, orange, yellow), the floor's one of 3 (yellow,
white, blue), each a two-shade mottle of small tiles as in the real frames; 1 to 3 objects, each
one of 7 shapes (box, sphere, cylinder, capsule, cone, icosahedron, triangle: a triangular ring of
round bars standing on one side, as the real frames show it), a random bright saturated colour, a
random place on the floor inside the camera ring (objects do not overlap) and a random turn about
the vertical; one light from a fixed pool of LIGHTS (position, strength), ambient plus diffuse
shading, a highlight on objects, and shadows that the objects cast on the floor and walls (one
shadow ray per floor or wall pixel, softened by a small blur). Pixels where two labels meet are
blended with their neighbours, a cheap stand-in for the real frames' antialiasing.

Colours: DeepMind's named ones, with the shades, brightness and mottle of the real frames. The 25 real
frames in ../shared/reference/rooms_ring_camera/ (a third party's saved images) show every named colour
with red and blue exchanged, as an image written in BGR order would: cerise walls violet, orange walls
azure, a blue floor tan, a pale sky-blue sky pale yellow. The shades here were read off those frames and
their red and blue exchanged back; the look statistics (band brightness, HSV saturation) do not change
under that exchange. See WALL_TEXTURES and FLOOR_TEXTURES.

Cameras: 10 views per scene from a fixed ring of radius RING_RADIUS at height CAMERA_HEIGHT,
at azimuths drawn uniformly, each facing the room's centre (0, 0, TARGET_HEIGHT); vertical field of
view FOV_DEG = 45 degrees (MuJoCo's default, the engine DeepMind names). The ring, height and wall
height are set so that the wall band sits where the real frames have it: a wall seen face on spans
rows 19 to 38 of 64, with the horizon near row 32.

The free-camera kinds (KINDS) are the same rooms (for a seed, scene i has the ring kind's walls, floor,
light and objects) seen from anywhere inside: each camera stands at a random place on the floor at least
FREE_WALL_MARGIN from the walls and FREE_OBJECT_MARGIN from every object, at a height drawn from
FREE_HEIGHT, facing any yaw, pitched within FREE_PITCH (walls close up, corners, the sky band, as the real
frames show them). rooms_free_camera_no_object_rotations stands every object square to the room (no turn)
and is stored at 64x64; rooms_free_camera_with_object_rotations turns each object about the vertical and is
stored at 128x128, as DeepMind's are (the loader brings frames to 64x64; labels are stored at 64x64).

Camera convention (the raw 5 numbers (x, y, z, yaw, pitch), radians), the same as the project's
Shepard-Metzler one (dataset/builtin.py): forward = (cos p cos y, -cos p sin y, sin p), so a camera
at azimuth a on the ring facing the centre has yaw = (pi - a) mod 2 pi and pitch =
atan2(TARGET_HEIGHT - CAMERA_HEIGHT, RING_RADIUS). Source for DeepMind's rooms using the same sense:
the GRNN code of Tung, Cheng and Fragkiadaki (github.com/ricsonc/grnn, gqn_inputs.py) reads
rooms_ring_camera and shepard_metzler cameras through one function that turns (yaw, pitch) into the
camera's elevation -pitch and azimuth pi - yaw (its comments record that the other sign choices
rendered wrongly), which is this convention's position for a camera facing the centre; its issue 7
states that rooms_ring_camera cameras sit at a fixed distance from the room's centre and always
face it. The real data's positions (ring radius and height, the origin's height) are not published;
here the origin is the floor's centre.

Labels (test split): per pixel 0 sky, 1 wall, 2 floor, 3 + k object k, at 64x64 (larger frames' labels
are sampled at the 64x64 pixels' centres), stored beside the shards (dataset/labels.py; read with
gqn_dataset.open_labels).

Look: rooms_statistics(frames) measures band brightness (rows 0-20, 21-42, 43-63), the fraction of
saturated pixels and of black pixels; REAL_ROOMS_STATISTICS and REAL_FREE_ROOMS_STATISTICS hold the real
frames' values and the renderer is tuned to them (experiments/rooms_look.py prints both and draws a
side-by-side figure).

Determinism: scene i of split `split` with seed `seed` is drawn from
numpy.random.default_rng([seed, crc32(split), i]) only (dataset/builtin.py scene_rng), so the bytes
of a scene do not depend on the number of workers or on which other scenes are rendered.

Command line:
    python dataset/rooms.py --out data/rooms --train_scenes 2000 --test_scenes 200 --seed 0
        [--kind rooms_ring_camera] [--workers 2] [--scenes_per_shard 1000] [--tfrecord --files_per_split 10]
        [--overwrite] [--no_progress]
writes data/rooms/train and data/rooms/test (test with labels) in the project's format, and with
--tfrecord also DeepMind-format files data/rooms/tfrecord/<kind>/{train,test}/<i>-of-<n>.tfrecord.
"""
import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import math
from collections import namedtuple

import numpy as np

from dataset.builtin import (JPEG_QUALITY, SPLITS, RenderError, add_output_arguments,  # noqa: F401
                             camera_basis, camera_rays, check_arguments, encode_jpeg, ensure_rendered,
                             exit_on_render_error, hsv_to_rgb, iter_tasks, run_command, scene_rng,
                             tune_malloc, write_rendered_split)
from dataset.labels import FIRST_OBJECT, FLOOR, SKY, WALL, labels_at

DATASET = "rooms_ring_camera"
IMAGE_SIZE = 64            # the ring kind's frame side, and the side of every kind's labels
# a kind of rooms: its DeepMind name, the stored frame side, cameras anywhere inside (else the ring), and
# whether objects are turned about the vertical
Kind = namedtuple("Kind", "dataset image_size free_camera object_turns")
KINDS = {k.dataset: k for k in (Kind("rooms_ring_camera", 64, False, True),
                                Kind("rooms_free_camera_no_object_rotations", 64, True, False),
                                Kind("rooms_free_camera_with_object_rotations", 128, True, True))}
VIEWS = 10
FOV_DEG = 45.0
ROOM_HALF = 3.5            # the room is 7 x 7 units
WALL_HEIGHT = 1.65
RING_RADIUS = 3.0          # the cameras' ring, centred on the room
CAMERA_HEIGHT = 0.55
TARGET_HEIGHT = 0.55       # the point the cameras face: (0, 0, TARGET_HEIGHT)
MAX_OBJECTS = 3
FREE_WALL_MARGIN = 0.3     # a free camera's least distance from a wall
FREE_OBJECT_MARGIN = 0.3   # ... and from an object's reach
FREE_HEIGHT = (0.4, 0.8)   # a free camera's height above the floor
FREE_PITCH = (-0.2, 0.25)  # a free camera's pitch, radians (negative: looking down)
SHAPES = ("box", "sphere", "cylinder", "capsule", "cone", "icosahedron", "triangle")
SIZE_RANGE = (0.3, 0.55)   # an object's scale s: its bounding radius is about s
RENDERER_VERSION = 2       # bump when a change alters the rendered bytes (invalidates cached datasets)
SCENES_PER_TASK = 16       # scenes per multiprocessing task

SKY_COLOUR = np.array([0.604, 0.886, 0.98], dtype=np.float32)
# name -> (the two shades of the mottle): DeepMind's named colours (see the docstring)
WALL_TEXTURES = {"red": ([1.00, 0.70, 0.58], [0.90, 0.52, 0.43]),
                 "green": ([0.78, 0.96, 0.78], [0.60, 0.74, 0.58]),
                 "cerise": ([0.94, 0.36, 0.54], [0.72, 0.21, 0.36]),
                 "orange": ([1.00, 0.85, 0.16], [0.94, 0.63, 0.07]),
                 "yellow": ([1.00, 1.00, 0.47], [0.85, 0.83, 0.31])}
FLOOR_TEXTURES = {"yellow": ([0.63, 0.59, 0.34], [0.46, 0.42, 0.23]),
                  "white": ([0.80, 0.77, 0.77], [0.59, 0.55, 0.55]),
                  "blue": ([0.30, 0.41, 0.48], [0.18, 0.24, 0.28])}
# the pool of lights: (position (x, y, z), diffuse strength, ambient strength)
LIGHTS = (((2.0, 1.2, 3.2), 1.5, 0.4), ((-2.2, 0.9, 3.0), 1.45, 0.42),
          ((0.6, -2.4, 3.4), 1.6, 0.38), ((-1.3, -1.6, 3.8), 1.45, 0.44))
WALL_TILE = 0.11           # the walls' mottle cell, world units
WALL_BLOTCH = 0.6          # the walls' coarse blotches
FLOOR_TILE = 0.16          # the floor's fine mottle cell
FLOOR_BLOTCH = 0.9         # the floor's coarse blotches
FLOOR_TILE_WEIGHT = 0.25   # how much the small tiles weigh in the floor's mottle (the rest: blotches)
WALL_TILE_WEIGHT = 0.55
SPECULAR, SHININESS = 0.35, 24.0
FALLOFF = 4.5              # the light's strength falls as 1 / (1 + (distance / FALLOFF)^2)
RING_CLEARANCE = 1.0       # the least gap between an object and the camera ring
SHADOW_DARKNESS = 0.75     # the part of the diffuse light a shadow takes away
OBJECT_SATURATION = (0.7, 0.95)
OBJECT_VALUE = (0.85, 1.0)
_EPS = 1e-4


# ----------------------------------------------------------------------------- cameras

def ring_cameras(azimuths):
    """Ring cameras at the given azimuths (radians, (V,)) -> raw cameras (V, 5) = (x, y, z, yaw, pitch),
    each at RING_RADIUS from the room's axis and CAMERA_HEIGHT above the floor, facing
    (0, 0, TARGET_HEIGHT)."""
    a = np.asarray(azimuths, dtype=np.float64)
    pos = np.stack([RING_RADIUS * np.cos(a), RING_RADIUS * np.sin(a), np.full_like(a, CAMERA_HEIGHT)],
                   axis=-1)
    forward = np.array([0.0, 0.0, TARGET_HEIGHT]) - pos
    forward /= np.linalg.norm(forward, axis=-1, keepdims=True)
    yaw = np.mod(np.arctan2(-forward[..., 1], forward[..., 0]), 2 * np.pi)
    pitch = np.arcsin(np.clip(forward[..., 2], -1.0, 1.0))
    return np.concatenate([pos, yaw[..., None], pitch[..., None]], axis=-1)


def free_cameras(rng, objects, views):
    """`views` cameras (views, 5) anywhere inside the room: on the floor at least FREE_WALL_MARGIN from the
    walls and FREE_OBJECT_MARGIN from every object's reach, a height in FREE_HEIGHT, any yaw, a pitch in
    FREE_PITCH."""
    limit = ROOM_HALF - FREE_WALL_MARGIN
    cameras = []
    while len(cameras) < views:
        x, y = rng.uniform(-limit, limit, 2)
        if any(math.hypot(x - o.x, y - o.y) < o.dims["reach"] + FREE_OBJECT_MARGIN for o in objects):
            continue
        cameras.append((x, y, rng.uniform(*FREE_HEIGHT), rng.uniform(0, 2 * np.pi), rng.uniform(*FREE_PITCH)))
    return np.array(cameras, dtype=np.float64)


def project(points, cameras, image_size=IMAGE_SIZE, fov=FOV_DEG):
    """Pinhole projection of world points (N, 3) into cameras (V, 5) -> (cols, rows, depth), each (V, N).

    Pixel (row i, col j) covers [j, j+1) x [i, i+1) in these continuous coordinates; row 0 is the top."""
    cameras = np.asarray(cameras, dtype=np.float64).reshape(-1, 5)
    forward, right, up = camera_basis(cameras[:, 3], cameras[:, 4])              # (V, 3) each
    rel = np.asarray(points, dtype=np.float64)[None] - cameras[:, None, :3]       # (V, N, 3)
    depth = np.einsum("vnk,vk->vn", rel, forward)
    tan_half = math.tan(math.radians(fov) / 2)
    u = np.einsum("vnk,vk->vn", rel, right) / (depth * tan_half)
    v = np.einsum("vnk,vk->vn", rel, up) / (depth * tan_half)
    return (u + 1) * image_size / 2, (1 - v) * image_size / 2, depth


# ----------------------------------------------------------------------------- scenes

_PHI = (1 + math.sqrt(5)) / 2


def _icosahedron_planes():
    """Unit face normals (20, 3) of an icosahedron turned to rest on a face, and its inradius /
    circumradius."""
    v = []
    for a in (-1, 1):
        for b in (-_PHI, _PHI):
            v += [(0, a, b), (a, b, 0), (b, 0, a)]
    v = np.array(v, dtype=np.float64)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    faces = [(i, j, k) for i in range(12) for j in range(i + 1, 12) for k in range(j + 1, 12)
             if min(np.linalg.norm(v[i] - v[j]), np.linalg.norm(v[j] - v[k]), np.linalg.norm(v[i] - v[k])) > 0
             and max(np.linalg.norm(v[i] - v[j]), np.linalg.norm(v[j] - v[k]),
                     np.linalg.norm(v[i] - v[k])) < 1.1]
    normals = np.array([v[list(f)].mean(axis=0) for f in faces])
    inradius = float(np.linalg.norm(normals[0]))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    down = normals[0]                                  # rotate this face's normal onto -z
    axis = np.cross(down, [0.0, 0.0, -1.0])
    s, c = np.linalg.norm(axis), float(np.dot(down, [0.0, 0.0, -1.0]))
    k = axis / s
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rot = np.eye(3) + s * kx + (1 - c) * kx @ kx       # Rodrigues
    return normals @ rot.T, inradius


_ICO_NORMALS, _ICO_INRADIUS = _icosahedron_planes()


class RoomObject:
    """One object: shape name, floor position (x, y), turn about z (radians), scale s, RGB colour,
    and the shape's dimensions (dims: a dict of floats, in the object's own frame, whose origin is
    its footprint's centre on the floor)."""

    def __init__(self, shape, x, y, turn, scale, colour, dims):
        self.shape, self.x, self.y, self.turn, self.scale = \
            shape, float(x), float(y), float(turn), float(scale)
        self.colour, self.dims = np.asarray(colour, dtype=np.float32), dims

    def bounding_sphere(self):
        """(centre (3,), radius) holding the whole object."""
        h = self.dims["height"]
        r = math.sqrt(self.dims["reach"] ** 2 + (h / 2) ** 2)
        return np.array([self.x, self.y, h / 2]), r


def _shape_dims(shape, s, rng):
    """The dimensions of one shape of scale s: its height, the horizontal reach from its axis, and more."""
    if shape == "sphere":
        return {"r": s, "height": 2 * s, "reach": s}
    if shape == "box":
        a, b, c = s * rng.uniform(0.55, 0.85, 3)
        return {"half": (a, b, c), "height": 2 * c, "reach": math.hypot(a, b)}
    if shape == "cylinder":
        r, h = s * rng.uniform(0.55, 0.8), s * rng.uniform(1.0, 2.0)
        return {"r": r, "height": h, "reach": r}
    if shape == "capsule":
        r, h = s * rng.uniform(0.4, 0.55), s * rng.uniform(1.6, 2.4)
        return {"r": r, "height": h, "reach": r}
    if shape == "cone":
        r, h = s * rng.uniform(0.7, 0.95), s * rng.uniform(1.3, 2.0)
        return {"r": r, "height": h, "reach": r}
    if shape == "icosahedron":
        return {"r": s, "height": 2 * s * _ICO_INRADIUS, "reach": s}
    if shape == "triangle":                           # an equilateral ring of round bars in the x-z plane
        side, bar = 2.3 * s, 0.2 * s
        return {"side": side, "bar": bar, "height": side * math.sqrt(3) / 2 + 2 * bar,
                "reach": side / 2 + bar}
    raise ValueError(f"unknown shape {shape!r}")


def random_objects(rng, count):
    """count RoomObjects placed without overlap inside the camera ring."""
    objects = []
    while len(objects) < count:
        shape = SHAPES[rng.integers(len(SHAPES))]
        s = rng.uniform(*SIZE_RANGE)
        dims = _shape_dims(shape, s, rng)
        limit = RING_RADIUS - dims["reach"] - RING_CLEARANCE
        for _ in range(100):
            x, y = rng.uniform(-limit, limit, 2)
            if math.hypot(x, y) > limit:
                continue
            if all(math.hypot(x - o.x, y - o.y) > dims["reach"] + o.dims["reach"] + 0.1 for o in objects):
                break
        else:
            continue                                      # no room left for this one: draw another
        colour = hsv_to_rgb([rng.random()], rng.uniform(*OBJECT_SATURATION), rng.uniform(*OBJECT_VALUE))[0]
        objects.append(RoomObject(shape, x, y, rng.uniform(0, 2 * np.pi), s, colour, dims))
    return objects


class Room:
    """One scene: wall and floor texture names, the texture seed, the light's index, objects, and the
    views' cameras (V, 5)."""

    def __init__(self, wall, floor, texture_seed, light, objects, cameras):
        self.wall, self.floor, self.texture_seed, self.light = wall, floor, int(texture_seed), int(light)
        self.objects, self.cameras = objects, cameras


def random_room(seed, split, index, views=VIEWS, kind=DATASET):
    """Scene `index` of a split of the kind `kind` (a name in KINDS), from scene_rng(seed, split, index) only.
    The kinds draw the same room; they differ in the cameras and the objects' turns."""
    kind = KINDS[kind]
    rng = scene_rng(seed, split, index)
    wall = list(WALL_TEXTURES)[rng.integers(len(WALL_TEXTURES))]
    floor = list(FLOOR_TEXTURES)[rng.integers(len(FLOOR_TEXTURES))]
    texture_seed = rng.integers(1 << 30)
    light = rng.integers(len(LIGHTS))
    objects = random_objects(rng, int(rng.integers(1, MAX_OBJECTS + 1)))
    if not kind.object_turns:
        for obj in objects:
            obj.turn = 0.0
    if kind.free_camera:
        cameras = free_cameras(rng, objects, views)
    else:
        cameras = ring_cameras(rng.uniform(0, 2 * np.pi, views))
    return Room(wall, floor, texture_seed, light, objects, cameras)


# ----------------------------------------------------------------------------- ray-object intersections
# Vectors are triples of arrays (x, y, z), each (N,) float32: numpy is several times faster on them
# than on (N, 3) arrays. Each shape takes ray origins o and unit directions d in the object's frame
# and returns (t (N,), normal triple): t the distance to the nearest hit ahead (inf for a miss).

_INF = np.float32(np.inf)


def _dot(a, b):
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _sub(a, b):
    return a[0] - b[0], a[1] - b[1], a[2] - b[2]


def _along(o, t, d):
    """The points o + t d, t = inf read as 0 (a miss has no point; its normal is not used)."""
    t = np.where(np.isfinite(t), t, 0)
    return o[0] + t * d[0], o[1] + t * d[1], o[2] + t * d[2]


def _sphere(o, d, centre, r):
    oc = _sub(o, centre)
    b = _dot(oc, d)
    disc = b * b - (_dot(oc, oc) - r * r)
    t = -b - np.sqrt(np.maximum(disc, 0))
    t = np.where((disc > 0) & (t > _EPS), t, _INF)
    p = _along(oc, t, d)
    return t, (p[0] / r, p[1] / r, p[2] / r)


def _capsule(o, d, a, b, r):
    """A round bar of radius r around the segment a-b (3-tuples of floats)."""
    ba = _sub(b, a)
    oa = _sub(o, a)
    baba = _dot(ba, ba)
    bard, baoa, rdoa, oaoa = _dot(d, ba), _dot(oa, ba), _dot(d, oa), _dot(oa, oa)
    qa = baba - bard * bard                                 # the quadratic of the infinite cylinder
    qb = baba * rdoa - baoa * bard
    qc = baba * oaoa - baoa * baoa - r * r * baba
    h = qb * qb - qa * qc
    with np.errstate(divide="ignore", invalid="ignore"):
        t_side = (-qb - np.sqrt(np.maximum(h, 0))) / qa
    y = baoa + t_side * bard                                # where along the segment the side is met
    side = (h >= 0) & (qa > 1e-9) & (y > 0) & (y < baba) & (t_side > _EPS)
    # otherwise the end cap (a sphere) at the end the cylinder's hit lies beyond
    beyond_a = y <= 0
    oc = tuple(np.where(beyond_a, oa[k], oa[k] - ba[k]) for k in range(3))
    cb = _dot(d, oc)
    hc = cb * cb - (_dot(oc, oc) - r * r)
    t_cap = -cb - np.sqrt(np.maximum(hc, 0))
    cap = (h >= 0) & ~side & (hc > 0) & (t_cap > _EPS)
    t = np.where(side, t_side, np.where(cap, t_cap, _INF))
    pa = _along(oa, t, d)                                   # the hit relative to a
    s = np.clip(_dot(pa, ba) / baba, 0, 1)
    return t, tuple((pa[k] - s * ba[k]) / r for k in range(3))


def _cylinder(o, d, r, height):
    """A vertical cylinder of radius r from the floor to `height` (its bottom lies on the floor, unseen)."""
    qa = d[0] * d[0] + d[1] * d[1]
    qb = o[0] * d[0] + o[1] * d[1]
    qc = o[0] * o[0] + o[1] * o[1] - r * r
    h = qb * qb - qa * qc
    with np.errstate(divide="ignore", invalid="ignore"):
        t_side = (-qb - np.sqrt(np.maximum(h, 0))) / qa
        t_top = (height - o[2]) / d[2]
    z = o[2] + t_side * d[2]
    side = (h >= 0) & (qa > 1e-12) & (z >= 0) & (z <= height) & (t_side > _EPS)
    top_x, top_y = o[0] + t_top * d[0], o[1] + t_top * d[1]
    top = (o[2] > height) & (t_top > _EPS) & (top_x * top_x + top_y * top_y <= r * r)
    t = np.where(top, t_top, np.where(side, t_side, _INF))
    p = _along(o, t, d)
    return t, (np.where(top, 0, p[0] / r), np.where(top, 0, p[1] / r), top.astype(np.float32))


def _cone(o, d, r, height):
    """A vertical cone, base of radius r on the floor, apex at `height`."""
    k2 = (r / height) ** 2
    w = height - o[2]
    qa = d[0] * d[0] + d[1] * d[1] - k2 * d[2] * d[2]
    qb = o[0] * d[0] + o[1] * d[1] + k2 * w * d[2]
    qc = o[0] * o[0] + o[1] * o[1] - k2 * w * w
    h = qb * qb - qa * qc
    with np.errstate(divide="ignore", invalid="ignore"):
        root = np.sqrt(np.maximum(h, 0))
        t1, t2 = (-qb - root) / qa, (-qb + root) / qa
    t = np.full(len(w), _INF)
    for cand in (np.maximum(t1, t2), np.minimum(t1, t2)):       # the nearer valid root wins
        z = o[2] + cand * d[2]
        t = np.where((h >= 0) & (z >= 0) & (z <= height) & (cand > _EPS) & np.isfinite(cand), cand, t)
    p = _along(o, t, d)
    n = (p[0], p[1], k2 * (height - p[2]))
    norm = np.maximum(np.sqrt(_dot(n, n)), 1e-12)
    return t, (n[0] / norm, n[1] / norm, n[2] / norm)


def _convex(o, d, normals, offsets):
    """The convex solid {x : normals @ x <= offsets} (planes (P, 3), (P,))."""
    enter = np.full(len(o[0]), -_INF)
    leave = np.full(len(o[0]), _INF)
    face = np.zeros(len(o[0]), np.int64)
    outside = np.zeros(len(o[0]), bool)
    for k, (n, off) in enumerate(zip(np.asarray(normals, np.float32), np.asarray(offsets, np.float32))):
        den = n[0] * d[0] + n[1] * d[1] + n[2] * d[2]
        num = off - (n[0] * o[0] + n[1] * o[1] + n[2] * o[2])
        with np.errstate(divide="ignore", invalid="ignore"):
            tp = num / den
        entering = (den < 0) & (tp > enter)
        enter = np.where(entering, tp, enter)
        face[entering] = k
        leave = np.where(den > 0, np.minimum(leave, tp), leave)
        outside |= (den == 0) & (num < 0)
    t = np.where((enter < leave) & (enter > _EPS) & ~outside, enter, _INF).astype(np.float32)
    n = np.asarray(normals, np.float32)[face]
    return t, (n[:, 0], n[:, 1], n[:, 2])


def _box_planes(half):
    a, b, c = half
    normals = [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]]
    return normals, [a, a, b, b, 2 * c, 0.0]


def intersect(obj, o, d):
    """Rays (world frame, triples of (N,) float32, d unit) against one RoomObject -> (t (N,), world
    normal triple)."""
    c, s = np.float32(math.cos(obj.turn)), np.float32(math.sin(obj.turn))
    x, y = o[0] - np.float32(obj.x), o[1] - np.float32(obj.y)
    o_l = (c * x + s * y, c * y - s * x, o[2])                                 # world -> object frame
    d_l = (c * d[0] + s * d[1], c * d[1] - s * d[0], d[2])
    k = obj.dims
    if obj.shape == "sphere":
        t, n = _sphere(o_l, d_l, (0, 0, k["r"]), k["r"])
    elif obj.shape == "box":
        t, n = _convex(o_l, d_l, *_box_planes(k["half"]))
    elif obj.shape == "cylinder":
        t, n = _cylinder(o_l, d_l, k["r"], k["height"])
    elif obj.shape == "capsule":
        t, n = _capsule(o_l, d_l, (0, 0, k["r"]), (0, 0, k["height"] - k["r"]), k["r"])
    elif obj.shape == "cone":
        t, n = _cone(o_l, d_l, k["r"], k["height"])
    elif obj.shape == "icosahedron":
        inr = k["r"] * _ICO_INRADIUS
        t, n = _convex(o_l, d_l, _ICO_NORMALS, inr + _ICO_NORMALS @ np.array([0, 0, inr]))
    else:                                                                       # triangle: three bars
        half, bar = k["side"] / 2, k["bar"]
        corners = [(-half, 0, bar), (half, 0, bar), (0, 0, bar + k["side"] * math.sqrt(3) / 2)]
        t, n = np.full(len(x), _INF), (0, 0, 0)
        for i in range(3):
            ti, ni = _capsule(o_l, d_l, corners[i], corners[(i + 1) % 3], bar)
            closer = ti < t
            t, n = np.where(closer, ti, t), tuple(np.where(closer, ni[j], n[j]) for j in range(3))
    n = (c * n[0] - s * n[1], s * n[0] + c * n[1], n[2])                        # object frame -> world
    return t.astype(np.float32), tuple(np.asarray(a, np.float32) for a in n)


def _near_sphere(o, d, centre, radius):
    """Which rays pass within radius of centre, ahead of their origin (d unit; any broadcastable shapes)."""
    w = (np.float32(centre[0]) - o[0], np.float32(centre[1]) - o[1], np.float32(centre[2]) - o[2])
    along = _dot(w, d)
    return (along > -radius) & (_dot(w, w) - along * along < radius * radius)


def _pick(v, index):
    """The entries `index` of each array of a triple."""
    return v[0][index], v[1][index], v[2][index]


# ----------------------------------------------------------------------------- textures

def _hash01(i, j, seed):
    """A pseudo-random number in [0, 1) for each pair of integer cell coordinates (arrays) and a seed."""
    h = (i.astype(np.int64) * 73856093 ^ j.astype(np.int64) * 19349663 ^ (seed * 83492791)) & 0xFFFFFFFF
    h = h.astype(np.uint32)
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x2C1B3C6D)
    h ^= h >> np.uint32(12)
    h *= np.uint32(0x297A2D39)
    h ^= h >> np.uint32(15)
    return (h >> np.uint32(8)).astype(np.float32) / np.float32(1 << 24)


def _value_noise(u, v, cell, seed):
    """Smooth noise in [0, 1): random values at a grid of `cell` spacing, blended bilinearly."""
    x, y = u / cell, v / cell
    i, j = np.floor(x), np.floor(y)
    fx, fy = x - i, y - j
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    i, j = i.astype(np.int64), j.astype(np.int64)
    a, b = _hash01(i, j, seed), _hash01(i + 1, j, seed)
    c, e = _hash01(i, j + 1, seed), _hash01(i + 1, j + 1, seed)
    return (a + (b - a) * fx) + ((c + (e - c) * fx) - (a + (b - a) * fx)) * fy


def _mottle(u, v, tile, blotch, seed, tile_weight):
    """The mix (N,) in [0, 1] between a texture's two shades: small tiles of random shade (weighing
    tile_weight) over larger smooth blotches."""
    tiles = _hash01(np.floor(u / tile), np.floor(v / tile), seed)
    blotches = _value_noise(u, v, blotch, seed + 1)
    return np.clip(tile_weight * tiles + (1.3 - tile_weight) * blotches - 0.15, 0, 1)


def _texture(shades, mix):
    light, dark = (np.asarray(c, dtype=np.float32) for c in shades)
    return dark + mix[:, None] * (light - dark)


# ----------------------------------------------------------------------------- renderer

def render_room(room, image_size=IMAGE_SIZE, fov=FOV_DEG):
    """Ray-cast one room into its views -> (images uint8 (V, H, W, 3), labels uint8 (V, H, W))."""
    cams = room.cameras
    n_views, per_view = len(cams), image_size * image_size
    dx, dy, dz = camera_rays(cams, image_size, fov)                            # (V, P) each, P = H*W
    ox, oy, oz = (cams[:, k:k + 1].astype(np.float32) for k in range(3))      # (V, 1) each

    # the room: the ray leaves the square through a wall plane, unless it meets the floor first
    with np.errstate(divide="ignore"):
        t_x = (np.copysign(np.float32(ROOM_HALF), dx) - ox) / dx
        t_y = (np.copysign(np.float32(ROOM_HALF), dy) - oy) / dy
        t_floor = np.where(dz < 0, -oz / dz, _INF)
    t_wall = np.minimum(t_x, t_y)
    on_floor = t_floor < t_wall
    label = np.where(on_floor, FLOOR, np.where(oz + t_wall * dz <= WALL_HEIGHT, WALL, SKY)).astype(np.uint8)
    t = np.where(label == SKY, _INF, np.minimum(t_floor, t_wall))
    # normals: the floor's +z; a wall's faces the room, against the ray's direction across it
    wall_x = (label == WALL) & (t_x <= t_y)
    wall_y = (label == WALL) & (t_x > t_y)
    n = [np.where(wall_x, -np.sign(dx), 0).astype(np.float32),
         np.where(wall_y, -np.sign(dy), 0).astype(np.float32),
         on_floor.astype(np.float32)]

    # the objects, nearest hit wins; only the rays passing near an object's bounding sphere are tried
    for k, obj in enumerate(room.objects):
        centre, radius = obj.bounding_sphere()
        cand = np.flatnonzero(_near_sphere((ox, oy, oz), (dx, dy, dz), centre, radius))
        if len(cand) == 0:
            continue
        view = cand // per_view
        tk, nk = intersect(obj, (ox.ravel()[view], oy.ravel()[view], oz.ravel()[view]),
                           _pick((dx.ravel(), dy.ravel(), dz.ravel()), cand))
        closer = tk < t.ravel()[cand]
        hit = cand[closer]
        t.ravel()[hit], label.ravel()[hit] = tk[closer], FIRST_OBJECT + k
        for a, b in zip(n, nk):
            a.ravel()[hit] = b[closer]

    # what is not sky: its hit point, albedo (textures), light (ambient + Lambert, shadows, highlights)
    label, t = label.ravel(), t.ravel()
    lit = np.flatnonzero(label != SKY)
    view = lit // per_view
    d = _pick((dx.ravel(), dy.ravel(), dz.ravel()), lit)
    p = _along((ox.ravel()[view], oy.ravel()[view], oz.ravel()[view]), t[lit], d)
    n = _pick(tuple(a.ravel() for a in n), lit)
    lab = label[lit]
    albedo = np.empty((len(lit), 3), np.float32)
    fl = np.flatnonzero(lab == FLOOR)
    albedo[fl] = _texture(FLOOR_TEXTURES[room.floor],
                          _mottle(p[0][fl], p[1][fl], FLOOR_TILE, FLOOR_BLOTCH, room.texture_seed,
                                  FLOOR_TILE_WEIGHT))
    wl = np.flatnonzero(lab == WALL)
    wall_nx, wall_ny = n[0][wl], n[1][wl]
    # the coordinate along the wall, offset so that each wall has its own
    along_wall = np.where(wall_nx != 0, p[1][wl], p[0][wl]) + 10 * (wall_nx + 2 * wall_ny)
    albedo[wl] = _texture(WALL_TEXTURES[room.wall], _mottle(along_wall, p[2][wl], WALL_TILE, WALL_BLOTCH,
                                                            room.texture_seed + 7, WALL_TILE_WEIGHT))
    for k, obj in enumerate(room.objects):
        albedo[lab == FIRST_OBJECT + k] = obj.colour

    light_pos, diffuse, ambient = LIGHTS[room.light]
    to_light = _sub(tuple(np.float32(c) for c in light_pos), p)
    dist = np.sqrt(_dot(to_light, to_light))
    l_dir = (to_light[0] / dist, to_light[1] / dist, to_light[2] / dist)
    lambert = np.maximum(_dot(n, l_dir), 0) / (1 + (dist / np.float32(FALLOFF)) ** 2)
    # shadows on the floor and walls: one ray from each of their points to the light, blurred
    surface = np.flatnonzero(lab <= FLOOR)
    sp = tuple(a[surface] + np.float32(1e-3) * b[surface] for a, b in zip(p, n))
    sd = _pick(l_dir, surface)
    blocked = np.zeros(len(label), np.float32)
    for obj in room.objects:
        centre, radius = obj.bounding_sphere()
        cand = np.flatnonzero(_near_sphere(sp, sd, centre, radius))
        if len(cand):
            tk, _ = intersect(obj, _pick(sp, cand), _pick(sd, cand))
            blocked[lit[surface[cand[tk < dist[surface[cand]]]]]] = 1
    shadow = _blur(blocked.reshape(n_views, image_size, image_size)).ravel()[lit]
    shadow[lab > FLOOR] = 0
    shade = albedo * (ambient + diffuse * lambert * (1 - SHADOW_DARKNESS * shadow))[:, None]
    obj_px = np.flatnonzero(lab >= FIRST_OBJECT)
    if len(obj_px):                                                           # Blinn-Phong highlight
        half = _sub(_pick(l_dir, obj_px), _pick(d, obj_px))
        cos_half = _dot(_pick(n, obj_px), half) / np.sqrt(_dot(half, half))
        shade[obj_px] += (SPECULAR * np.maximum(cos_half, 0) ** SHININESS)[:, None]
    colour = np.empty((len(label), 3), np.float32)
    colour[:] = SKY_COLOUR
    colour[lit] = shade
    label = label.reshape(n_views, image_size, image_size)
    colour = _soften_edges(colour.reshape(n_views, image_size, image_size, 3), label)
    images = (np.clip(colour, 0, 1) * 255 + 0.5).astype(np.uint8)
    return images, label


def _soften_edges(colour, label):
    """Pixels on the border of two labels (V, H, W) take half of a blur of their neighbourhood: a cheap
    stand-in for the antialiasing of the real frames' renderer. colour (V, H, W, 3) float32."""
    edge = np.zeros(label.shape, bool)
    edge[:, 1:] |= label[:, 1:] != label[:, :-1]
    edge[:, :-1] |= label[:, 1:] != label[:, :-1]
    edge[:, :, 1:] |= label[:, :, 1:] != label[:, :, :-1]
    edge[:, :, :-1] |= label[:, :, 1:] != label[:, :, :-1]
    v, i, j = np.nonzero(edge)
    h, w = label.shape[1:]
    blurred = np.zeros((len(v), 3), np.float32)
    for di, wi in ((-1, 1), (0, 2), (1, 1)):               # the 3x3 binomial kernel, edges repeated
        for dj, wj in ((-1, 1), (0, 2), (1, 1)):
            blurred += (wi * wj / 16) * colour[v, np.clip(i + di, 0, h - 1), np.clip(j + dj, 0, w - 1)]
    colour[v, i, j] = 0.5 * (colour[v, i, j] + blurred)
    return colour


def _blur(x):
    """A 3x3 binomial blur of (V, H, W) images, edges repeated."""
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
    p = p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]
    return (p[:, :, :-2] + 2 * p[:, :, 1:-1] + p[:, :, 2:]) / 16


def render_scenes(seed, split, start, stop, views=VIEWS, labels=False, kind=DATASET):
    """Scenes start..stop-1 of a split of the kind `kind` -> list of (frames: `views` JPEG bytes, cameras
    float32 (views, 5)) or, with labels, (frames, cameras, labels uint8 (views, 64, 64))."""
    out = []
    for i in range(start, stop):
        room = random_room(seed, split, i, views, kind)
        images, label = render_room(room, KINDS[kind].image_size)
        scene = ([encode_jpeg(im) for im in images], room.cameras.astype(np.float32))
        out.append(scene + (labels_at(label),) if labels else scene)
    return out


def _render_task(args):
    return render_scenes(*args)


def iter_scenes(seed, split, n_scenes, views=VIEWS, workers=1, labels=False, kind=DATASET):
    """Yield the n_scenes scenes of a split in order, rendered by `workers` processes."""
    tasks = [(seed, split, s, min(s + SCENES_PER_TASK, n_scenes), views, labels, kind)
             for s in range(0, n_scenes, SCENES_PER_TASK)]
    return iter_tasks(_render_task, tasks, workers)


# ----------------------------------------------------------------------------- the look

BANDS = ((0, 21), (21, 43), (43, 64))     # rows of the sky, the walls and the floor in a 64-row frame
SATURATED = 0.5                           # HSV saturation above which a pixel counts as saturated
BLACK = 0.1                               # a pixel is black when its largest channel is below this

# Statistics of real rooms_ring_camera frames: rooms_statistics of the 25 real frames in
# ../shared/reference/rooms_ring_camera/ (decoded PNG, RGB). The built-in rooms are tuned to them.
REAL_ROOMS_STATISTICS = dict(band_sky=0.799, band_wall=0.510, band_floor=0.467, saturated=0.296, black=0.0)
# ... and of the 12 real rooms_free_camera frames in ../shared/reference/rooms_free_camera/ (three scenes, so
# a noisy reference: their saturated share depends on which walls those scenes drew); FREE_PITCH and
# FREE_HEIGHT are set so that the bands match it.
REAL_FREE_ROOMS_STATISTICS = dict(band_sky=0.652, band_wall=0.464, band_floor=0.493, saturated=0.713,
                                  black=0.0)


def rooms_statistics(images):
    """How frames (..., H, W, 3) look, channels last, uint8 (divided by 255) or floats in [0, 1]; leading
    dimensions are frames. Returns a dict of floats: band_sky, band_wall, band_floor (mean of the RGB
    values of rows 0-20, 21-42, 43-63, for 64-row frames; BANDS scaled for others), saturated (fraction
    of pixels of HSV saturation > SATURATED) and black (fraction of pixels whose largest channel < BLACK)."""
    images = np.asarray(images)
    if images.ndim < 3 or images.shape[-1] != 3:
        raise ValueError(f"rooms_statistics expects frames (..., H, W, 3), got shape {images.shape}")
    x = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    x = x.reshape((-1,) + x.shape[-3:])
    h = x.shape[1]
    rows = [(a * h // 64, b * h // 64) for a, b in BANDS]
    top, bottom = x.max(axis=-1), x.min(axis=-1)
    saturation = np.where(top > 0, (top - bottom) / np.maximum(top, 1e-12), 0)
    stats = {f"band_{name}": float(x[:, a:b].mean()) for name, (a, b) in zip(("sky", "wall", "floor"), rows)}
    stats.update(saturated=float((saturation > SATURATED).mean()), black=float((top < BLACK).mean()))
    return stats


# ----------------------------------------------------------------------------- writing datasets

def builtin_root(data_root, kind=DATASET):
    """The folder of the built-in rooms of a kind under data_root (train/ and test/ inside)."""
    return os.path.join(data_root, kind)


def render_parameters(train_scenes, test_scenes, seed, views=VIEWS, kind=DATASET):
    """Everything that decides the rendered bytes (what DONE.json records and compares)."""
    return {"generator": "dataset/rooms.py", "renderer_version": RENDERER_VERSION, "dataset": kind,
            "train_scenes": int(train_scenes), "test_scenes": int(test_scenes), "seed": int(seed),
            "views": int(views), "image_size": KINDS[kind].image_size, "fov_deg": FOV_DEG,
            "jpeg_quality": JPEG_QUALITY}


def render_split(split_dir, split, n_scenes, seed, views=VIEWS, workers=1, scenes_per_shard=1000,
                 tfrecord_dir=None, files_per_split=10, progress=None, kind=DATASET):
    """Render one split into split_dir (write_split; the test split with label files beside its shards)
    and, when tfrecord_dir is given, also as DeepMind TFRecord files tfrecord_dir/<i>-of-<n>.tfrecord.

    progress: a tqdm bar to advance by one per scene, or None. Returns the number of scenes written."""
    scenes = iter_scenes(seed, split, n_scenes, views, workers, labels=split == "test", kind=kind)
    return write_rendered_split(split_dir, scenes, n_scenes,
                                {"dataset": kind, "seed": int(seed), "split": split},
                                scenes_per_shard, tfrecord_dir, files_per_split, progress)


def ensure_builtin_rooms(root, train_scenes, test_scenes, seed=0, workers=None, progress=True, splits=SPLITS,
                         kind=DATASET):
    """Render the built-in rooms' `splits` of a kind into root/train and root/test (labels) once, and reuse
    them afterwards (dataset/builtin.py ensure_rendered: markers, a lock, safe against a killed render).
    Returns (train_dir, test_dir)."""
    workers = min(2, os.cpu_count() or 1) if workers is None else int(workers)
    check_arguments(workers, 1, {"train_scenes": train_scenes, "test_scenes": test_scenes}, seed)
    return ensure_rendered(root, render_parameters(train_scenes, test_scenes, seed, kind=kind),
                           train_scenes, test_scenes,
                           lambda split_dir, split, n, tfrecord_dir, bar: render_split(
                               split_dir, split, n, seed, VIEWS, workers, progress=bar, kind=kind),
                           progress, "room", splits)


# ----------------------------------------------------------------------------- command line

def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Render rooms like DeepMind's rooms_ring_camera and "
                                            "rooms_free_camera_* (gqn-datasets).")
    p.add_argument("--kind", choices=list(KINDS), default=DATASET,
                   help="the ring camera (64x64), or a camera anywhere inside with objects square to the "
                        "room "
                        "(64x64) or turned (128x128)")
    add_output_arguments(p, "KIND")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    tune_malloc()       # this process is ours: with --workers 1 it renders
    total, seconds = exit_on_render_error(lambda: run_command(
        args, args.kind, lambda split_dir, split, n, tfrecord_dir, bar: render_split(
            split_dir, split, n, args.seed, VIEWS, args.workers, args.scenes_per_shard, tfrecord_dir,
            args.files_per_split, bar, args.kind)))
    print(f"wrote {total} {args.kind} scenes x {VIEWS} views to {args.out} in {seconds:.1f} s: "
          f"{total / max(seconds, 1e-9):.0f} scenes/s with {args.workers} worker(s)")


if __name__ == "__main__":
    main()
