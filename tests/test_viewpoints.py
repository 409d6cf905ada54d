"""dataset/viewpoints.py: the viewpoint order and the conversions."""

import numpy as np
import torch

from dataset.viewpoints import deepmind_to_project_viewpoint, project_to_deepmind_viewpoint, raw_to_viewpoint


def test_viewpoint_order_is_xyz_cos_sin_yaw_then_pitch():
    raw = np.array([[1.0, 2.0, 3.0, 0.3, -0.2]], np.float32)
    expected = [1, 2, 3, np.cos(0.3), np.sin(0.3), np.cos(-0.2), np.sin(-0.2)]
    np.testing.assert_allclose(raw_to_viewpoint(raw)[0], expected, rtol=1e-6)
    np.testing.assert_allclose(raw_to_viewpoint(torch.from_numpy(raw))[0].numpy(), expected, rtol=1e-6)
    deepmind = np.array([1, 2, 3, np.sin(0.3), np.cos(0.3), np.sin(-0.2), np.cos(-0.2)])
    np.testing.assert_allclose(deepmind_to_project_viewpoint(deepmind), expected)
    np.testing.assert_allclose(project_to_deepmind_viewpoint(np.array(expected)), deepmind)


def test_cameras_that_look_at_one_point_orbit_and_free_cameras_walk():
    from dataset import mazes, rooms
    from dataset.viewpoints import looks_at_one_point
    assert looks_at_one_point(rooms.random_room(0, "train", 1).cameras)                # the ring
    az = np.linspace(0, 6, 15)                           # Shepard-Metzler: on a sphere, facing the origin
    position = 3.333 * np.stack([np.cos(az) * np.cos(az / 3), np.sin(az) * np.cos(az / 3),
                                 np.sin(az / 3)], 1)
    yaw = np.mod(-np.arctan2(-position[:, 1], -position[:, 0]), 2 * np.pi)
    pitch = np.arcsin(-position[:, 2:] / 3.333)
    assert looks_at_one_point(np.concatenate([position, yaw[:, None], pitch], 1))
    for kind in ("rooms_free_camera_no_object_rotations", "rooms_free_camera_with_object_rotations"):
        rooms_cameras = [rooms.random_room(0, "train", i, kind=kind).cameras for i in range(5)]
        assert not any(looks_at_one_point(c) for c in rooms_cameras)
    assert not looks_at_one_point(mazes.random_maze(0, "train", 0).cameras)


def test_a_walk_passes_through_the_scenes_cameras_and_comes_back():
    from dataset import mazes
    from dataset.viewpoints import walk_path
    cameras = mazes.random_maze(0, "train", 3).cameras
    path = walk_path(cameras, 120, stops=6, start=7)
    assert path.shape == (120, 5)
    np.testing.assert_allclose(path[0], cameras[7])
    hits = [j for j in range(len(cameras)) if np.abs(path - cameras[j]).max(axis=1).min() < 0.1]
    assert 7 in hits and len(hits) >= 4                    # it passes through the scene's cameras
    np.testing.assert_allclose(path[:, 2], mazes.EYE_HEIGHT)                     # at eye height throughout
    steps = np.linalg.norm(np.diff(path[:, :2], axis=0), axis=1)
    assert steps.max() < 0.5 and np.linalg.norm(path[-1, :2] - path[0, :2]) < 0.5     # smooth, and a loop
    assert np.ptp(path[:, 0]) + np.ptp(path[:, 1]) > 1.0                          # it goes somewhere
