"""Mazes like DeepMind's GQN "mazes" (made in DeepMind Lab): first-person views inside a maze, a numpy ray
caster, the writer.

Scene (DeepMind's description, gqn-datasets): a GRID x GRID grid of square cells (CELL = 1 unit), walls
on cell boundaries, one or two rooms joined by corridors, random wall and floor textures; first-person
views at 84x84, 300 per scene. Here the layout is a random depth-first maze over the cells (long corridors,
every cell reachable; random_layout), with one or two rooms of 2x2 to 3x3 cells whose inner walls are
removed; the outer wall is closed. Walls are WALL_HEIGHT high with no thickness; above them the sky, as
DeepMind Lab draws its mazes: a blue gradient with soft clouds, fixed to directions, so every view of a
scene sees the same sky. Each scene draws its wall texture (a pattern of WALL_PATTERNS in a palette of
WALL_PALETTES), its floor texture (FLOOR_PATTERNS x FLOOR_PALETTES), its sun's direction (walls facing it
are brighter) and its clouds. Corners and wall feet are darkened (a cheap ambient occlusion), which gives
the frames the depth cues of DeepMind Lab's baked lighting.

Cameras: VIEWS views per scene, each at a random place in a random cell (at least CAMERA_MARGIN from the
cell's boundaries, so never in a wall), at EYE_HEIGHT, any yaw, a pitch in PITCH; field of view FOV_DEG
(DeepMind Lab's default, 90 degrees across the square frame). The raw 5-number cameras (x, y, z, yaw,
pitch) follow the project's convention (dataset/builtin.py); the maze's centre is the origin and the floor
is z = 0.

Renderer: walls stand upright, so where a pixel's ray meets a wall depends only on the ray's direction in
the floor's plane. Each view casts AZIMUTH_SAMPLES rays per frame width across its pixels' azimuths through
the grid (a 2D digital differential analyser over cell boundaries, cast_2d); each pixel takes the wall its
nearest sample met and meets that wall's plane exactly with its own ray, then is a wall, the floor in
front of it, or the sky above it.

Labels (test split): per pixel 0 sky, 1 wall, 2 floor (dataset/labels.py), at 64x64.

Determinism: scene i of split `split` with seed `seed` is drawn from scene_rng(seed, split, i) only.

Command line:
    python dataset/mazes.py --out data/mazes --train_scenes 2000 --test_scenes 200 --seed 0
        [--workers 2] [--scenes_per_shard 100] [--tfrecord --files_per_split 10] [--overwrite] [--no_progress]
writes data/mazes/train and data/mazes/test (test with labels) in the project's format, and with --tfrecord
also DeepMind-format files data/mazes/tfrecord/mazes/{train,test}/<i>-of-<n>.tfrecord.
"""
import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import functools
import math

import numpy as np

from dataset.builtin import (JPEG_QUALITY, SPLITS, RenderError, add_output_arguments,  # noqa: F401
                             camera_rays, check_arguments,
                             encode_jpeg, ensure_rendered, exit_on_render_error, iter_tasks, run_command,
                             scene_rng, tune_malloc, write_rendered_split)
from dataset.labels import FLOOR, SKY, WALL, labels_at

DATASET = "mazes"
IMAGE_SIZE = 84
VIEWS = 300
GRID = 7                     # cells per side
CELL = 1.0                   # a cell's side, world units
WALL_HEIGHT = 1.0
EYE_HEIGHT = 0.45
FOV_DEG = 90.0
PITCH = (-0.2, 0.2)          # radians
CAMERA_MARGIN = 0.2          # a camera's least distance from its cell's boundaries, world units
ROOM_SIZES = (2, 3)          # a room's side, cells
AZIMUTH_SAMPLES = 4          # 2D rays cast per pixel of frame width
VIEWS_PER_BATCH = 60         # views ray-cast together (bounds the arrays' memory)
SCENES_PER_TASK = 2          # scenes per multiprocessing task
TEXELS = 64                  # texture samples per world unit (textures are tabulated once, then looked up)
RENDERER_VERSION = 1         # bump when a change alters the rendered bytes (invalidates cached datasets)

# wall textures: a pattern drawn in one of the palettes (light shade, dark shade, mortar or trim)
WALL_PATTERNS = ("bricks", "panels", "tiles")
WALL_PALETTES = (((0.78, 0.52, 0.38), (0.66, 0.40, 0.29), (0.45, 0.34, 0.28)),     # terracotta
                 ((0.70, 0.70, 0.66), (0.58, 0.58, 0.55), (0.38, 0.38, 0.37)),     # grey stone
                 ((0.82, 0.74, 0.52), (0.70, 0.61, 0.40), (0.48, 0.40, 0.26)),     # sandstone
                 ((0.52, 0.62, 0.44), (0.42, 0.51, 0.35), (0.28, 0.34, 0.24)),     # mossy green
                 ((0.55, 0.60, 0.78), (0.44, 0.48, 0.66), (0.29, 0.31, 0.45)),     # slate blue
                 ((0.80, 0.62, 0.70), (0.68, 0.48, 0.57), (0.45, 0.31, 0.38)))     # rose
FLOOR_PATTERNS = ("checks", "planks")
FLOOR_PALETTES = (((0.55, 0.47, 0.36), (0.44, 0.37, 0.28)),                         # brown
                  ((0.50, 0.50, 0.48), (0.38, 0.38, 0.37)),                         # grey
                  ((0.62, 0.56, 0.42), (0.50, 0.44, 0.32)),                         # ochre
                  ((0.40, 0.46, 0.40), (0.31, 0.36, 0.31)))                         # green-grey
SKY_HORIZON = np.array([0.80, 0.87, 0.95], np.float32)
SKY_ZENITH = np.array([0.30, 0.50, 0.85], np.float32)
CLOUD = np.array([0.97, 0.97, 0.98], np.float32)


# ----------------------------------------------------------------------------- layouts

class Maze:
    """One scene: walls (west_east (GRID, GRID + 1): a wall on the line x = k in cell row r is
    west_east[r, k]; south_north (GRID + 1, GRID): on the line y = k in cell column c is south_north[k, c];
    grid coordinates, cell (row r, column c) covers [c, c + 1] x [r, r + 1]), the rooms [(row, col, h, w)],
    the textures, the sun's azimuth, the clouds' seed and the views' cameras (V, 5)."""

    def __init__(self, west_east, south_north, rooms, wall, floor, sun, cloud_seed, cameras):
        self.west_east, self.south_north, self.rooms = west_east, south_north, rooms
        self.wall, self.floor, self.sun, self.cloud_seed = wall, floor, float(sun), int(cloud_seed)
        self.cameras = cameras


def random_layout(rng, grid=GRID):
    """(west_east, south_north, rooms): a depth-first maze over grid x grid cells with 1 or 2 rooms opened up.

    The depth-first walk gives long corridors and joins every cell; each room is a rectangle of cells with
    its inner walls removed (its corridors lead in where the walk crossed its edge)."""
    west_east = np.ones((grid, grid + 1), bool)
    south_north = np.ones((grid + 1, grid), bool)
    seen = np.zeros((grid, grid), bool)
    start = (int(rng.integers(grid)), int(rng.integers(grid)))
    stack, seen[start] = [start], True
    while stack:
        r, c = stack[-1]
        options = [(r + dr, c + dc) for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1))
                   if 0 <= r + dr < grid and 0 <= c + dc < grid and not seen[r + dr, c + dc]]
        if not options:
            stack.pop()
            continue
        nr, nc = options[rng.integers(len(options))]
        if nr != r:
            south_north[max(r, nr), c] = False
        else:
            west_east[r, max(c, nc)] = False
        seen[nr, nc] = True
        stack.append((nr, nc))
    rooms = []
    for _ in range(int(rng.integers(1, 3))):
        for _ in range(50):                 # a place that does not touch an earlier room
            h, w = (int(rng.integers(ROOM_SIZES[0], ROOM_SIZES[1] + 1)) for _ in range(2))
            r, c = int(rng.integers(grid - h + 1)), int(rng.integers(grid - w + 1))
            if all(r > r2 + h2 or r2 > r + h or c > c2 + w2 or c2 > c + w for r2, c2, h2, w2 in rooms):
                rooms.append((r, c, h, w))
                west_east[r:r + h, c + 1:c + w] = False
                south_north[r + 1:r + h, c:c + w] = False
                break
    return west_east, south_north, rooms


def random_cameras(rng, views, grid=GRID):
    """`views` cameras (views, 5) in random cells, CAMERA_MARGIN inside the cell, at EYE_HEIGHT, any yaw, a
    pitch in PITCH; world coordinates (the maze's centre at the origin)."""
    cells = rng.integers(grid, size=(views, 2))
    within = rng.uniform(CAMERA_MARGIN, CELL - CAMERA_MARGIN, size=(views, 2))
    xy = (cells + within / CELL) * CELL - grid * CELL / 2
    return np.concatenate([xy[:, ::-1], np.full((views, 1), EYE_HEIGHT),
                           rng.uniform(0, 2 * np.pi, (views, 1)), rng.uniform(*PITCH, (views, 1))], axis=1)


def random_maze(seed, split, index, views=VIEWS):
    """Scene `index` of a split, from scene_rng(seed, split, index) only."""
    rng = scene_rng(seed, split, index)
    west_east, south_north, rooms = random_layout(rng)
    wall = (int(rng.integers(len(WALL_PATTERNS))), int(rng.integers(len(WALL_PALETTES))))
    floor = (int(rng.integers(len(FLOOR_PATTERNS))), int(rng.integers(len(FLOOR_PALETTES))))
    sun, cloud_seed = rng.uniform(0, 2 * np.pi), rng.integers(1 << 30)
    return Maze(west_east, south_north, rooms, wall, floor, sun, cloud_seed, random_cameras(rng, views))


def layout_text(maze):
    """The layout as text, north up: '+' corners, '|' and '-' walls, ' ' open; for looking at a maze."""
    g = maze.west_east.shape[0]
    lines = []
    for r in range(g, -1, -1):
        lines.append("+" + "+".join("-" if maze.south_north[r, c] else " " for c in range(g)) + "+")
        if r > 0:
            lines.append("".join(("|" if maze.west_east[r - 1, c] else " ") + (" " if c < g else "")
                                 for c in range(g + 1)))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- ray casting

def cast_2d(maze, ox, oy, dx, dy):
    """Rays in the floor's plane, grid coordinates (arrays (N,); (dx, dy) need not be unit) -> (axis (N,):
    0 for a wall on a line x = const, 1 for y = const; plane (N,): that line's coordinate). Every ray ends on
    a wall: the outer wall is closed."""
    grid = maze.west_east.shape[0]
    cx = np.clip(np.floor(ox), 0, grid - 1).astype(np.int64)
    cy = np.clip(np.floor(oy), 0, grid - 1).astype(np.int64)
    step_x, step_y = np.where(dx > 0, 1, -1), np.where(dy > 0, 1, -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_x, inv_y = 1.0 / np.abs(dx), 1.0 / np.abs(dy)
        t_x = np.where(dx != 0, (cx + (dx > 0) - ox) / dx, np.inf)
        t_y = np.where(dy != 0, (cy + (dy > 0) - oy) / dy, np.inf)
    axis = np.zeros(len(ox), np.int64)
    plane = np.zeros(len(ox), np.float64)
    live = np.arange(len(ox))
    for _ in range(4 * grid + 4):
        if len(live) == 0:
            break
        across_x = t_x[live] <= t_y[live]
        lx, ly = live[across_x], live[~across_x]
        bx = cx[lx] + (step_x[lx] > 0)                        # the x line crossed next
        by = cy[ly] + (step_y[ly] > 0)
        hit_x = maze.west_east[cy[lx], bx]
        hit_y = maze.south_north[by, cx[ly]]
        axis[lx[hit_x]], plane[lx[hit_x]] = 0, bx[hit_x]
        axis[ly[hit_y]], plane[ly[hit_y]] = 1, by[hit_y]
        go_x, go_y = lx[~hit_x], ly[~hit_y]
        cx[go_x] += step_x[go_x]
        t_x[go_x] += inv_x[go_x]
        cy[go_y] += step_y[go_y]
        t_y[go_y] += inv_y[go_y]
        live = np.concatenate([go_x, go_y])
    return axis, plane


def _hash01(a, b, seed):
    """A pseudo-random number in [0, 1) per pair of integer arrays and a seed."""
    h = (a.astype(np.int64) * 73856093 ^ b.astype(np.int64) * 19349663 ^ (int(seed) * 83492791)) & 0xFFFFFFFF
    h = h.astype(np.uint32)
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x2C1B3C6D)
    h ^= h >> np.uint32(12)
    return (h >> np.uint32(8)).astype(np.float32) / np.float32(1 << 24)


def _value_noise(u, v, seed):
    """Smooth noise in [0, 1) on a unit grid, blended bilinearly with a smoothstep."""
    i, j = np.floor(u), np.floor(v)
    fu, fv = u - i, v - j
    fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    a, b = _hash01(i, j, seed), _hash01(i + 1, j, seed)
    c, d = _hash01(i, j + 1, seed), _hash01(i + 1, j + 1, seed)
    return (a + (b - a) * fu) * (1 - fv) + (c + (d - c) * fu) * fv


def _texel_grid(width, height):
    """The texel centres (u, v), each (height * width,) float32, of a texture of `width` x `height` units."""
    u = (np.arange(int(width * TEXELS), dtype=np.float32) + 0.5) / TEXELS
    v = (np.arange(int(height * TEXELS), dtype=np.float32) + 0.5) / TEXELS
    return np.tile(u, len(v)), np.repeat(v, len(u))


@functools.lru_cache(maxsize=None)
def wall_texture(pattern, palette):
    """The wall texture (WALL_HEIGHT * TEXELS, TEXELS, 3) float32: one world unit along the wall (it repeats),
    the wall's height up, row 0 at the floor."""
    u, z = _texel_grid(1, WALL_HEIGHT)
    return wall_albedo(pattern, palette, u, z).reshape(len(np.unique(z)), -1, 3)


@functools.lru_cache(maxsize=None)
def floor_texture(pattern, palette):
    """The floor texture (2 * TEXELS, 2 * TEXELS, 3) float32: two world units square (it repeats), row = y."""
    x, y = _texel_grid(2, 2)
    return floor_albedo(pattern, palette, x, y).reshape(2 * TEXELS, 2 * TEXELS, 3)


def _look_up(texture, u, v):
    """Nearest texels of a repeating texture (rows, cols, 3) at world coordinates u (across), v (down)."""
    rows, cols = texture.shape[:2]
    return texture[np.mod((v * TEXELS).astype(np.int64), rows), np.mod((u * TEXELS).astype(np.int64), cols)]


def _near_line(x, width):
    """Where x lies within `width` of an integer (a joint between tiles, bricks or boards)."""
    return np.minimum(x % 1, 1 - x % 1) < width


def wall_albedo(pattern, palette, u, z):
    """Wall colour (N, 3) at (u along the wall, z height), world units."""
    light, dark, trim = (np.asarray(c, np.float32) for c in WALL_PALETTES[palette])
    name = WALL_PATTERNS[pattern]
    if name == "bricks":                            # courses of bricks, every other course offset by half
        row = np.floor(z / 0.125)
        x = u / 0.25 + 0.5 * (row % 2)
        shade = _hash01(np.floor(x), row, 11)
        joint = _near_line(x, 0.06) | _near_line(z / 0.125, 0.1)
    elif name == "panels":                          # tall panels with a frame and a rail at mid height
        x = u / 0.5
        shade = 0.35 + 0.3 * _hash01(np.floor(x), np.zeros_like(x), 12)
        joint = _near_line(x, 0.07) | (np.abs(z - 0.5) < 0.035) | (z < 0.06)
    else:                                           # square tiles with grout
        x, y = u / 0.2, z / 0.2
        shade = _hash01(np.floor(x), np.floor(y), 13)
        joint = _near_line(x, 0.06) | _near_line(y, 0.06)
    colour = dark + shade[:, None] * (light - dark)
    return np.where(joint[:, None], trim, colour)


def floor_albedo(pattern, palette, x, y):
    """Floor colour (N, 3) at (x, y), world units."""
    light, dark = (np.asarray(c, np.float32) for c in FLOOR_PALETTES[palette])
    if FLOOR_PATTERNS[pattern] == "checks":
        mix = ((np.floor(x / 0.5) + np.floor(y / 0.5)) % 2) * 0.8 + 0.2 * _value_noise(x / 0.15, y / 0.15, 21)
        return dark + mix[:, None] * (light - dark)
    board = np.floor(x / 0.2)                       # planks along y, each offset along its length
    along = (y + _hash01(board % 10, np.zeros_like(board), 22) * 3) / 1.0
    mix = 0.25 + 0.55 * _hash01(board, np.floor(along), 23) + 0.2 * _value_noise(x / 0.04, y / 0.5, 24)
    gap = _near_line(x / 0.2, 0.05) | _near_line(along, 0.01)
    colour = dark + mix[:, None] * (light - dark)
    return np.where(gap[:, None], 0.7 * dark, colour)


def sky_colour(dx, dy, dz, cloud_seed):
    """The sky (N, 3) in directions (dx, dy, dz) (unit): a gradient from the horizon to the zenith, clouds."""
    elevation = np.arcsin(np.clip(dz, -1, 1))
    azimuth = np.arctan2(dy, dx)
    t = np.clip(elevation / (np.pi / 3), 0, 1)[:, None]
    colour = SKY_HORIZON + t * (SKY_ZENITH - SKY_HORIZON)
    # clouds on a grid wrapped around the azimuth (12 cells a turn), thinning towards the horizon
    u = (azimuth + np.pi) / (2 * np.pi) * 12
    v = np.maximum(elevation, 0) * 10
    n = 0.65 * _value_noise(u % 12, v, cloud_seed) + 0.35 * _value_noise((2 * u) % 24, 2 * v, cloud_seed + 1)
    cover = np.clip((n - 0.5) * 3, 0, 1) * np.clip(elevation * 8, 0, 1)
    return colour + cover[:, None] * (CLOUD - colour)


def _cell_walls(maze, gx, gy):
    """The distances (west, east, south, north), each (N,), from points (grid coordinates, inside the maze)
    to the walls of their cell, in world units; 9 where that side has no wall."""
    grid = maze.west_east.shape[0]
    c = np.clip(np.floor(gx), 0, grid - 1).astype(np.int64)
    r = np.clip(np.floor(gy), 0, grid - 1).astype(np.int64)
    fx, fy = gx - c, gy - r
    return tuple(np.where(wall, distance * np.float32(CELL), np.float32(9)) for wall, distance in (
        (maze.west_east[r, c], fx), (maze.west_east[r, c + 1], 1 - fx),
        (maze.south_north[r, c], fy), (maze.south_north[r + 1, c], 1 - fy)))


def render_maze(maze, image_size=IMAGE_SIZE, fov=FOV_DEG):
    """Ray-cast a maze's views -> (images uint8 (V, H, W, 3), labels uint8 (V, H, W))."""
    images, labels = [], []
    for start in range(0, len(maze.cameras), VIEWS_PER_BATCH):
        im, lab = _render_views(maze, maze.cameras[start:start + VIEWS_PER_BATCH], image_size, fov)
        images.append(im)
        labels.append(lab)
    return np.concatenate(images), np.concatenate(labels)


def _render_views(maze, cams, image_size, fov):
    grid = maze.west_east.shape[0]
    n_views, per_view = len(cams), image_size * image_size
    dx, dy, dz = camera_rays(cams, image_size, fov)                                   # (V, P) float32
    half = grid * CELL / 2
    ox, oy, oz = (a.astype(np.float32) for a in ((cams[:, 0:1] + half) / CELL, (cams[:, 1:2] + half) / CELL,
                                                 cams[:, 2:3]))                       # grid units; height

    # the 2D rays: AZIMUTH_SAMPLES per pixel of width, spanning each view's pixel azimuths
    azimuth = np.arctan2(dy, dx)
    centre = np.arctan2(np.sin(-cams[:, 3:4]), np.cos(cams[:, 3:4])).astype(np.float32)  # the view's
    offset = np.mod(azimuth - centre + np.float32(np.pi), np.float32(2 * np.pi)) - np.float32(np.pi)
    reach = float(np.abs(offset).max()) + 1e-6
    samples = AZIMUTH_SAMPLES * image_size
    sample_az = centre + np.linspace(-reach, reach, samples)[None]                     # (V, samples)
    axis, plane = cast_2d(maze, np.repeat(ox.ravel().astype(np.float64), samples),
                          np.repeat(oy.ravel().astype(np.float64), samples),
                          np.cos(sample_az).ravel(), np.sin(sample_az).ravel())
    plane = plane.astype(np.float32)
    nearest = np.rint((offset + np.float32(reach)) * np.float32((samples - 1) / (2 * reach))).astype(np.int64)
    pick = (np.arange(n_views)[:, None] * samples + nearest).ravel()
    axis, plane = axis[pick].reshape(n_views, per_view), plane[pick].reshape(n_views, per_view)

    # each pixel's own ray against the wall plane its nearest sample met
    d_axis = np.where(axis == 0, dx, dy) / CELL
    o_axis = np.where(axis == 0, ox, oy)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_wall = (plane - o_axis) / d_axis                                             # world units
        t_floor = np.where(dz < 0, -oz / dz, np.float32(np.inf))
    t_wall = np.where(t_wall > 0, t_wall, np.float32(np.inf))
    z_wall = oz + t_wall * dz
    label = np.where(z_wall < 0, FLOOR, np.where(z_wall <= WALL_HEIGHT, WALL, SKY)).astype(np.uint8)
    label = np.where((label == FLOOR) & ~np.isfinite(t_floor), SKY, label)
    t = np.where(label == WALL, t_wall, t_floor)

    colour = np.empty((n_views * per_view, 3), np.float32)
    label, t, axis = label.ravel(), t.ravel(), axis.ravel()
    dx, dy, dz = dx.ravel(), dy.ravel(), dz.ravel()
    view = np.repeat(np.arange(n_views), per_view)
    sun = (math.cos(maze.sun), math.sin(maze.sun))

    def hit(index):
        """The hit points (grid coordinates x, y; height z) of the pixels `index`."""
        v, ti = view[index], t[index]
        return (ox.ravel()[v] + ti * dx[index] / CELL, oy.ravel()[v] + ti * dy[index] / CELL,
                oz.ravel()[v] + ti * dz[index])

    w = np.flatnonzero(label == WALL)
    gx, gy, gz = hit(w)
    on_x = axis[w] == 0                                   # a wall on a line x = const
    normal_x = np.where(on_x, -np.sign(dx[w]), 0)         # facing the camera
    normal_y = np.where(on_x, 0, -np.sign(dy[w]))
    light = 0.62 + 0.38 * np.maximum(normal_x * sun[0] + normal_y * sun[1], 0)
    # darker at the wall's foot and where another wall meets it (measured in the cell on the camera's side)
    west, east, south, north = _cell_walls(maze, gx + normal_x * 1e-3, gy + normal_y * 1e-3)
    corner = np.where(on_x, np.minimum(south, north), np.minimum(west, east))
    occlusion = (1 - 0.25 * np.exp(-gz / 0.08)) * (1 - 0.3 * np.exp(-corner / 0.05))
    fog = 1 / (1 + (t[w] / 9) ** 2)
    along = np.where(on_x, gy, gx) * CELL
    albedo = _look_up(wall_texture(*maze.wall), along, np.minimum(gz, WALL_HEIGHT - 1e-4))
    colour[w] = albedo * (light * occlusion * fog)[:, None]

    f = np.flatnonzero(label == FLOOR)
    gx, gy, _ = hit(f)
    near = np.minimum.reduce(_cell_walls(maze, gx, gy))
    floor_light = 0.85 * (1 - 0.35 * np.exp(-near / 0.12)) / (1 + (t[f] / 9) ** 2)
    colour[f] = _look_up(floor_texture(*maze.floor), gx * CELL, gy * CELL) * floor_light[:, None]

    s = np.flatnonzero(label == SKY)
    colour[s] = sky_colour(dx[s], dy[s], dz[s], maze.cloud_seed)
    images = (np.clip(colour, 0, 1) * 255 + 0.5).astype(np.uint8)
    return images.reshape(n_views, image_size, image_size, 3), label.reshape(n_views, image_size, image_size)


def render_scenes(seed, split, start, stop, views=VIEWS, labels=False):
    """Scenes start..stop-1 of a split -> list of (frames: `views` JPEG bytes, cameras float32 (views, 5))
    or, with labels, (frames, cameras, labels uint8 (views, 64, 64))."""
    out = []
    for i in range(start, stop):
        maze = random_maze(seed, split, i, views)
        images, label = render_maze(maze)
        scene = ([encode_jpeg(im) for im in images], maze.cameras.astype(np.float32))
        out.append(scene + (labels_at(label),) if labels else scene)
    return out


def _render_task(args):
    return render_scenes(*args)


def iter_scenes(seed, split, n_scenes, views=VIEWS, workers=1, labels=False):
    """Yield the n_scenes scenes of a split in order, rendered by `workers` processes."""
    tasks = [(seed, split, s, min(s + SCENES_PER_TASK, n_scenes), views, labels)
             for s in range(0, n_scenes, SCENES_PER_TASK)]
    return iter_tasks(_render_task, tasks, workers)


# ----------------------------------------------------------------------------- writing datasets

def builtin_root(data_root):
    """The folder of the built-in mazes under data_root (train/ and test/ inside)."""
    return os.path.join(data_root, DATASET)


def render_parameters(train_scenes, test_scenes, seed, views=VIEWS):
    """Everything that decides the rendered bytes (what DONE.json records and compares)."""
    return {"generator": "dataset/mazes.py", "renderer_version": RENDERER_VERSION, "dataset": DATASET,
            "train_scenes": int(train_scenes), "test_scenes": int(test_scenes), "seed": int(seed),
            "views": int(views), "image_size": IMAGE_SIZE, "fov_deg": FOV_DEG, "jpeg_quality": JPEG_QUALITY}


def render_split(split_dir, split, n_scenes, seed, views=VIEWS, workers=1, scenes_per_shard=100,
                 tfrecord_dir=None, files_per_split=10, progress=None):
    """Render one split into split_dir (the test split with label files beside its shards) and, when
    tfrecord_dir is given, also as DeepMind TFRecord files. Returns the number of scenes written."""
    scenes = iter_scenes(seed, split, n_scenes, views, workers, labels=split == "test")
    return write_rendered_split(split_dir, scenes, n_scenes,
                                {"dataset": DATASET, "seed": int(seed), "split": split},
                                scenes_per_shard, tfrecord_dir, files_per_split, progress)


def ensure_builtin_mazes(root, train_scenes, test_scenes, seed=0, workers=None, progress=True, splits=SPLITS):
    """Render the built-in mazes' `splits` into root/train and root/test (labels) once, and reuse them
    afterwards (dataset/builtin.py ensure_rendered). Returns (train_dir, test_dir)."""
    workers = min(2, os.cpu_count() or 1) if workers is None else int(workers)
    check_arguments(workers, 1, {"train_scenes": train_scenes, "test_scenes": test_scenes}, seed)
    return ensure_rendered(root, render_parameters(train_scenes, test_scenes, seed),
                           train_scenes, test_scenes,
                           lambda split_dir, split, n, tfrecord_dir, bar: render_split(
                               split_dir, split, n, seed, VIEWS, workers, progress=bar),
                           progress, "maze", splits)


# ----------------------------------------------------------------------------- command line

def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Render first-person views in mazes like DeepMind's mazes "
                                            "(gqn-datasets).")
    add_output_arguments(p, DATASET, scenes_per_shard=100)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    tune_malloc()
    total, seconds = exit_on_render_error(lambda: run_command(
        args, DATASET, lambda split_dir, split, n, tfrecord_dir, bar: render_split(
            split_dir, split, n, args.seed, VIEWS, args.workers, args.scenes_per_shard, tfrecord_dir,
            args.files_per_split, bar)))
    print(f"wrote {total} mazes x {VIEWS} views to {args.out} in {seconds:.1f} s: "
          f"{total / max(seconds, 1e-9):.2f} scenes/s with {args.workers} worker(s)")


if __name__ == "__main__":
    main()
