"""Representation networks psi(x, v) of the GQN (paper, Figure S1): Pool (default), Tower, Pyramid.

Each maps one image x (N, 3, 64, 64) in [0, 1] and its viewpoint v (N, 7) to a representation:
Pool and Pyramid give r (N, r_dim, 1, 1), Tower gives r (N, r_dim, 16, 16). The scene
representation is the sum over the context views (see `model.GQN.encode`). Parameter names match
the original torch-gqn (`conv1`..`conv8`; the pyramid's `net.0`..`net.6`), so its state dicts load.
Channel widths derive from r_dim (256 in the paper): r_dim and r_dim // 2 in the tower, r_dim / 8,
/ 4, / 2, 1 in the pyramid.
"""

import torch
from torch import nn
from torch.nn import functional as F


class Tower(nn.Module):
    """Figure S1 'tower': two residual blocks, the viewpoint broadcast and concatenated at 16x16."""

    # r is (N, r_dim, 16, 16), on the cores' grid: the cores' learned upsampling of r goes unused
    on_grid = True

    def __init__(self, x_dim=3, v_dim=7, r_dim=256):
        super().__init__()
        half = r_dim // 2
        self.v_dim = v_dim
        self.conv1 = nn.Conv2d(x_dim, r_dim, kernel_size=2, stride=2)
        self.conv2 = nn.Conv2d(r_dim, r_dim, kernel_size=2, stride=2)
        self.conv3 = nn.Conv2d(r_dim, half, kernel_size=3, padding=1)
        self.conv4 = nn.Conv2d(half, r_dim, kernel_size=2, stride=2)
        self.conv5 = nn.Conv2d(r_dim + v_dim, r_dim, kernel_size=3, padding=1)
        self.conv6 = nn.Conv2d(r_dim + v_dim, half, kernel_size=3, padding=1)
        self.conv7 = nn.Conv2d(half, r_dim, kernel_size=3, padding=1)
        self.conv8 = nn.Conv2d(r_dim, r_dim, kernel_size=1)

    def forward(self, x, v):
        skip_in = F.relu(self.conv1(x))                     # (N, r, 32, 32)
        skip_out = F.relu(self.conv2(skip_in))              # (N, r, 16, 16)
        r = F.relu(self.conv3(skip_in))                     # (N, r/2, 32, 32)
        r = F.relu(self.conv4(r)) + skip_out                # (N, r, 16, 16)
        n = r.shape[-1]
        v = v[:, :, None, None].expand(-1, -1, n, n)        # (N, 7) -> (N, 7, 16, 16)
        skip_in = torch.cat((r, v), dim=1)                  # (N, r + 7, 16, 16)
        skip_out = F.relu(self.conv5(skip_in))
        r = F.relu(self.conv6(skip_in))
        r = F.relu(self.conv7(r)) + skip_out
        return F.relu(self.conv8(r))                        # (N, r, 16, 16)


class Pool(Tower):
    """Figure S1 'pool': the tower followed by an average pool over its 16x16 grid."""

    on_grid = False

    def forward(self, x, v):
        return super().forward(x, v).mean(dim=(2, 3), keepdim=True)  # (N, r, 1, 1)


class Pyramid(nn.Module):
    """Figure S1 'pyramid': the viewpoint broadcast to 64x64 and concatenated before four convs."""

    on_grid = False

    def __init__(self, x_dim=3, v_dim=7, r_dim=256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(v_dim + x_dim, r_dim // 8, kernel_size=2, stride=2), nn.ReLU(),  # 32x32
            nn.Conv2d(r_dim // 8, r_dim // 4, kernel_size=2, stride=2), nn.ReLU(),     # 16x16
            nn.Conv2d(r_dim // 4, r_dim // 2, kernel_size=2, stride=2), nn.ReLU(),     # 8x8
            nn.Conv2d(r_dim // 2, r_dim, kernel_size=8, stride=8), nn.ReLU(),          # 1x1
        )

    def forward(self, x, v):
        n = x.shape[-1]
        v = v[:, :, None, None].expand(-1, -1, n, n)        # (N, 7) -> (N, 7, 64, 64)
        return self.net(torch.cat((v, x), dim=1))           # (N, r, 1, 1); v first, as the original

