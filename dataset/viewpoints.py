"""Viewpoints: raw cameras (x, y, z, yaw, pitch) -> the 7-d vector the model takes, and the two orders.

The project's one viewpoint order is torch-gqn's,
    (x, y, z, cos yaw, sin yaw, cos pitch, sin pitch),
made from raw cameras by raw_to_viewpoint. DeepMind's reader gives
    (x, y, z, sin yaw, cos yaw, sin pitch, cos pitch);
deepmind_to_project_viewpoint and project_to_deepmind_viewpoint convert 7-d data between the two, and
SWAP_SIN_COS (each (sin, cos) pair swapped) is that permutation, here and nowhere else.

Cameras that look at one point: viewpoint_to_raw turns viewpoints back into raw cameras, look_target
finds the point a scene's cameras look at (the origin for Shepard-Metzler, the room's centre at eye
height for rooms_ring_camera) and camera_around places cameras on a sphere about that point, looking
at it. sample.py's orbit and explore.py's camera move this way, so that on a ring of cameras (rooms)
they walk the ring itself.

Cameras that look anywhere (rooms_free_camera, mazes): looks_at_one_point tells them apart from the
cameras alone (so DeepMind's converted data is told apart too), and walk_path leads a camera through
the scene's own camera positions, which stand in free space.
"""

import numpy as np
import torch

from dataset.builtin import forward_from_yaw_pitch
from dataset.errors import DatasetError


def raw_to_viewpoint(cameras):
    """Raw cameras (..., 5) = (x, y, z, yaw, pitch) -> viewpoints (..., 7) in the project's order
    (x, y, z, cos yaw, sin yaw, cos pitch, sin pitch). Takes and returns a torch tensor or a numpy array."""
    if cameras.shape[-1] != 5:
        raise DatasetError(f"raw cameras must end in 5 numbers (x, y, z, yaw, pitch) but have shape "
                           f"{tuple(cameras.shape)}; pass the cameras as stored in the data.")
    xyz, yaw, pitch = cameras[..., :3], cameras[..., 3:4], cameras[..., 4:5]
    if isinstance(cameras, torch.Tensor):
        return torch.cat([xyz, torch.cos(yaw), torch.sin(yaw), torch.cos(pitch), torch.sin(pitch)], dim=-1)
    return np.concatenate([xyz, np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)], axis=-1)


SWAP_SIN_COS = [0, 1, 2, 4, 3, 6, 5]   # swapping each (sin, cos) pair is its own inverse


def deepmind_to_project_viewpoint(viewpoints):
    """(..., 7) in DeepMind's order (x, y, z, sin yaw, cos yaw, sin pitch, cos pitch) -> the project's
    order."""
    if viewpoints.shape[-1] != 7:
        raise DatasetError(f"viewpoints must end in 7 numbers but have shape {tuple(viewpoints.shape)}; "
                           f"pass 7-d viewpoints.")
    return viewpoints[..., SWAP_SIN_COS]


def project_to_deepmind_viewpoint(viewpoints):
    """(..., 7) in the project's order -> DeepMind's order (x, y, z, sin yaw, cos yaw, sin pitch,
    cos pitch)."""
    return deepmind_to_project_viewpoint(viewpoints)


def viewpoint_to_raw(viewpoints):
    """Viewpoints (..., 7) in the project's order (torch or numpy) -> raw cameras (..., 5) =
    (x, y, z, yaw, pitch), float64 numpy, yaw in [0, 2 pi)."""
    v = np.asarray(viewpoints, dtype=np.float64)
    yaw = np.mod(np.arctan2(v[..., 4], v[..., 3]), 2 * np.pi)
    pitch = np.arctan2(v[..., 6], v[..., 5])
    return np.concatenate([v[..., :3], yaw[..., None], pitch[..., None]], axis=-1)


def look_target(raw):
    """The point nearest to every camera's line of sight (least squares), (3,): where the cameras (S, 5) look.
    The origin when the lines are (nearly) parallel, as for one camera or cameras all facing one way."""
    raw = np.asarray(raw, dtype=np.float64)
    forward = forward_from_yaw_pitch(raw[:, 3], raw[:, 4])                             # (S, 3)
    # (S, 3, 3): drops the part along each line
    across = np.eye(3) - forward[:, :, None] * forward[:, None, :]
    a, b = across.sum(0), (across @ raw[:, :3, None]).sum(0)[:, 0]
    if np.linalg.cond(a) > 1e6:
        return np.zeros(3)
    return np.linalg.solve(a, b)


def camera_around(target, yaw, pitch, distance):
    """Raw cameras (..., 5) at `distance` from `target` (3,) looking at it with the given yaw and pitch
    (radians)."""
    yaw, pitch = np.asarray(yaw, dtype=np.float64), np.asarray(pitch, dtype=np.float64)
    position = np.asarray(target, dtype=np.float64) - np.asarray(distance, dtype=np.float64)[..., None] * \
        forward_from_yaw_pitch(yaw, pitch)
    yaw, pitch = np.broadcast_to(yaw, position.shape[:-1]), np.broadcast_to(pitch, position.shape[:-1])
    return np.concatenate([position, np.mod(yaw, 2 * np.pi)[..., None], pitch[..., None]], axis=-1)


def viewpoint_around(target, yaw, pitch, distance):
    """camera_around's cameras as the model's viewpoints: float32 torch tensor (..., 7)."""
    return torch.from_numpy(raw_to_viewpoint(camera_around(target, yaw, pitch, distance)).astype(np.float32))


def looks_at_one_point(raw, tolerance=0.1):
    """Whether a scene's cameras (S, 5) all look at one point, ahead of each (Shepard-Metzler's origin, a
    ring's centre): the point look_target finds lies off no camera's line of sight by more than `tolerance`
    times its distance from that camera. Free cameras (rooms_free_camera, mazes) do not: a viewer walks
    among them rather than orbiting. One camera alone counts as looking at one point."""
    raw = np.asarray(raw, dtype=np.float64)
    if len(raw) < 2:
        return True
    forward = forward_from_yaw_pitch(raw[:, 3], raw[:, 4])
    to_target = look_target(raw) - raw[:, :3]
    along = (to_target * forward).sum(axis=1)
    off = np.linalg.norm(to_target - along[:, None] * forward, axis=1)
    distance = np.linalg.norm(to_target, axis=1)
    return bool(np.all(along > 0) and np.all(off <= tolerance * np.maximum(distance, 1e-9)))


def walk_path(raw, frames, stops=8, start=0):
    """A loop through a scene's own cameras (S, 5): from camera `start` on to the nearest camera not yet
    visited that stands at least an eighth of the cameras' extent away (the nearest one where none does),
    `stops` cameras in all (at most S), and back to the start -> raw cameras (frames, 5). The camera
    moves at an even pace (a degree of turn counts as much as 1/50 of a unit of distance), along straight
    legs, its yaw turning the shorter way and its pitch and height changing evenly; at each stop it is
    exactly that camera. The cameras of free-camera data stand in free space, so the legs between near
    ones mostly do too."""
    raw = np.asarray(raw, dtype=np.float64)
    hop = np.ptp(raw[:, :2], axis=0).max() / 8
    order = [start]
    left = set(range(len(raw))) - {start}
    while left and len(order) < stops:
        gap = {j: float(np.linalg.norm(raw[j, :3] - raw[order[-1], :3])) for j in left}
        far = [j for j in left if gap[j] >= hop] or list(left)
        order.append(min(far, key=gap.get))
        left.discard(order[-1])
    legs = [(raw[a], raw[b]) for a, b in zip(order, order[1:] + order[:1])]
    turn = [float(np.angle(np.exp(1j * (b[3] - a[3])))) for a, b in legs]
    degree = np.pi / 180 * 50                                   # the turn that costs one unit of distance
    cost = np.array([np.linalg.norm(b[:3] - a[:3]) + (abs(t) + abs(b[4] - a[4])) / degree
                     for (a, b), t in zip(legs, turn)])
    if cost.sum() == 0:
        return np.repeat(raw[start:start + 1], frames, axis=0)
    ends = np.cumsum(cost)
    out = []
    for s in np.arange(frames) * ends[-1] / frames:
        k = min(int(np.searchsorted(ends, s, side="right")), len(legs) - 1)
        a, b = legs[k]
        f = 0.0 if cost[k] == 0 else (s - (ends[k] - cost[k])) / cost[k]
        position = a[:3] + f * (b[:3] - a[:3])
        out.append(np.concatenate([position, [np.mod(a[3] + f * turn[k], 2 * np.pi),
                                              a[4] + f * (b[4] - a[4])]]))
    return np.stack(out)

