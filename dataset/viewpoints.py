"""Viewpoints: raw cameras (x, y, z, yaw, pitch) -> the 7-d vector the model takes, and the two orders.

The project's one viewpoint order is torch-gqn's,
    (x, y, z, cos yaw, sin yaw, cos pitch, sin pitch),
made from raw cameras by raw_to_viewpoint. DeepMind's reader gives
    (x, y, z, sin yaw, cos yaw, sin pitch, cos pitch);
deepmind_to_project_viewpoint and project_to_deepmind_viewpoint convert 7-d data between the two, and
SWAP_SIN_COS (each (sin, cos) pair swapped) is that permutation, here and nowhere else.
"""

import numpy as np
import torch

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
    """(..., 7) in DeepMind's order (x, y, z, sin yaw, cos yaw, sin pitch, cos pitch) -> the project's order."""
    if viewpoints.shape[-1] != 7:
        raise DatasetError(f"viewpoints must end in 7 numbers but have shape {tuple(viewpoints.shape)}; "
                           f"pass 7-d viewpoints.")
    return viewpoints[..., SWAP_SIN_COS]


def project_to_deepmind_viewpoint(viewpoints):
    """(..., 7) in the project's order -> DeepMind's order (x, y, z, sin yaw, cos yaw, sin pitch, cos pitch)."""
    return deepmind_to_project_viewpoint(viewpoints)
