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
