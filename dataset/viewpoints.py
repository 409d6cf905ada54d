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
