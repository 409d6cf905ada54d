"""Inference and generation cores of the GQN (paper, Figure S2), one step l of the L-step unroll.

Both cores are a conv-LSTM whose input at every step is [fixed inputs, varying inputs]:
- generation core: gates over [h_g | v_q, r | z]; then the canvas u += upsample_h(h_g');
- inference core:  gates over [h_e | x_q, v_q, r | h_g, u], with x_q and u brought down to the
  core's grid (16x16 for 64x64 images) by 4x4 stride-4 convs.
(Channel orders are the original torch-gqn's, so its weights load unchanged.)

How v_q and a 1x1 r reach the 16x16 grid is a choice (the paper does not say):
- "learned" (default, as torch-gqn): transposed convs k16 s16 without bias. On a 1x1 input such a
  conv is a matrix product, and it is computed as one (`upsample_point`): same weights, same result,
  far cheaper than the convolution routine (benchmarks/README.md).
- "broadcast": the vector is copied to every position; no parameters.

The fixed inputs enter every step unchanged, so `prepare` is called once per core and unroll:
either it concatenates them into one map (the fused step convolves [h, fixed, varying] in one conv),
or, where that saves work (a shared core reuses them L times; a broadcast vector's share is cheap
exactly), it computes their share of the gate pre-activations up front and each step convolves
only the varying channels. Both are the same convolution, summed in another order.
"""

import torch
from torch import nn

from conv_lstm import ConvLSTMCell


def upsample_point(deconv, x):
    """ConvTranspose2d(C, C', k, stride=k) applied to a 1x1 map, as a matrix product.

    x (B, C) or (B, C, 1, 1) -> (B, C', k, k); deconv.weight has shape (C, C', k, k).
    Always in float32, also under bfloat16 autocast: the product is bound by reading the weight, not by
    arithmetic, and a bfloat16 copy of the weight kept for the backward pass would cost memory (as large
    as the weight, the model's largest) for no speed.
    """
    w = deconv.weight
    with torch.autocast(x.device.type, enabled=False):
        out = x.reshape(x.shape[0], -1).float() @ w.reshape(w.shape[0], -1)  # (B, C) @ (C, C'*k*k)
    return out.view(x.shape[0], *w.shape[1:])


class _Core(nn.Module):
    """What both cores share: bringing v_q and r to the grid, and the fixed-input bookkeeping."""

    def __init__(self, fixed_channels, varying_channels, v_dim, r_dim, h_dim, grid, upsample):
        super().__init__()
        self.grid = grid
        self.upsample = upsample
        if upsample == "learned":
            self.upsample_v = nn.ConvTranspose2d(v_dim, v_dim, grid, stride=grid, bias=False)
            self.upsample_r = nn.ConvTranspose2d(r_dim, r_dim, grid, stride=grid, bias=False)
        self.core = ConvLSTMCell(fixed_channels + varying_channels, h_dim, kernel_size=5)
        self.fixed_channels = fixed_channels

    def _to_grid(self, v_q, r):
        """v_q (B, 7), r (B, r_dim, 1 or grid, ...) -> parts on the grid: maps, or vectors to broadcast."""
        if r.shape[-1] == self.grid:        # the tower's r is already a grid
            r_part = r
        elif self.upsample == "learned":
            r_part = upsample_point(self.upsample_r, r)          # (B, r_dim, 16, 16)
        else:
            r_part = r.flatten(1)                                # (B, r_dim), broadcast later
        v_part = upsample_point(self.upsample_v, v_q) if self.upsample == "learned" else v_q
        return v_part, r_part

    def _prepare(self, parts, precompute):
        """Fixed inputs, in channel order, each a map (B, C, n, n) or a vector (B, C) to broadcast."""
        cell, h = self.core, self.core.hidden_channels
        if not precompute:
            maps = [p if p.dim() == 4 else p[:, :, None, None].expand(-1, -1, self.grid, self.grid)
                    for p in parts]
            return ("map", torch.cat(maps, dim=1))
        total = h + self.fixed_channels
        weight = cell.gates.weight
        gates = cell.gates.bias[None, :, None, None]
        start = h
        maps, map_start = [], None
        for p in parts + [None]:
            if p is not None and p.dim() == 4:          # group neighbouring maps into one conv
                map_start = start if not maps else map_start
                maps.append(p)
                start += p.shape[1]
                continue
            if maps:
                x = torch.cat(maps, dim=1)
                gates = gates + cell.partial_gates(x, weight[:, map_start:start])
                maps = []
            if p is not None:                             # a vector: its exact broadcast share
                gates = gates + cell.constant_gates(p, weight[:, start:start + p.shape[1]], self.grid)
                start += p.shape[1]
        w_var = cell.weight_columns([(0, h), (total, weight.shape[1])])
        return ("gates", gates, w_var)

    def _gates(self, fixed, h, varying):
        """Gate pre-activations over [h | fixed | varying...]."""
        if fixed[0] == "map":
            return self.core.gates(torch.cat([h, fixed[1], *varying], dim=1))
        _, gates, w_var = fixed
        return gates + self.core.partial_gates(torch.cat([h, *varying], dim=1), w_var)


class InferenceCore(_Core):
    """Posterior LSTM: (c_e, h_e) <- LSTM([h_e | x_q, v_q, r | h_g, u])."""

    def __init__(self, x_dim=3, v_dim=7, r_dim=256, h_dim=128, grid=16, scale=4, upsample="learned"):
        super().__init__(x_dim + v_dim + r_dim, 2 * h_dim, v_dim, r_dim, h_dim, grid, upsample)
        self.downsample_x = nn.Conv2d(x_dim, x_dim, scale, stride=scale, bias=False)
        self.downsample_u = nn.Conv2d(h_dim, h_dim, scale, stride=scale, bias=False)

    def prepare(self, x_q, v_q, r, precompute=False):
        """Fixed inputs of every step: x_q (B, 3, 64, 64), v_q (B, 7), r (B, r_dim, *, *)."""
        x = self.downsample_x(x_q)                             # (B, 3, 16, 16)
        v, r = self._to_grid(v_q, r)
        return self._prepare([x, v, r], precompute)

    def forward(self, fixed, c_e, h_e, h_g, u):
        u = self.downsample_u(u)                               # (B, h, 64, 64) -> (B, h, 16, 16)
        pre = self._gates(fixed, h_e, [h_g, u])
        return self.core.update(pre, c_e)                       # (c_e, h_e)


class GenerationCore(_Core):
    """Prior/generator LSTM: (c_g, h_g) <- LSTM([h_g | v_q, r | z]); u <- u + upsample_h(h_g)."""

    def __init__(self, v_dim=7, r_dim=256, h_dim=128, z_dim=3, grid=16, scale=4, upsample="learned"):
        super().__init__(v_dim + r_dim, z_dim, v_dim, r_dim, h_dim, grid, upsample)
        self.upsample_h = nn.ConvTranspose2d(h_dim, h_dim, scale, stride=scale, bias=False)

    def prepare(self, v_q, r, precompute=False):
        """Fixed inputs of every step: v_q (B, 7), r (B, r_dim, *, *)."""
        return self._prepare(list(self._to_grid(v_q, r)), precompute)

    def forward(self, fixed, c_g, h_g, u, z):
        pre = self._gates(fixed, h_g, [z])
        c_g, h_g = self.core.update(pre, c_g)
        u = u + self.upsample_h(h_g)                           # (B, h, 16, 16) -> (B, h, 64, 64)
        return c_g, h_g, u
