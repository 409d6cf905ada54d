"""Convolutional LSTM cell of the GQN cores (paper, Figure S2).

The four gates (forget, input, output, candidate) of the original are four 5x5 convolutions over
the concatenation [hidden, input]. Here they are one convolution with 4*hidden output channels,
stacked in the order forget, input, output, state: the same function, one kernel launch, and the
same FLOPs. `torch_gqn.load_torch_gqn_state_dict` splits and stacks the weights exactly.

Besides the plain `forward`, the cell can add up the gate pre-activations from parts of its input
(`partial_gates`, `constant_gates`): a core whose inputs partly stay the same over the L steps
(query viewpoint, scene representation, query image) computes their share once and only convolves
what changes at each step. The sum is the same convolution, reassociated.
"""

import torch
from torch import nn
from torch.nn import functional as F


class ConvLSTMCell(nn.Module):
    """c' = f * c + i * g,  h' = o * tanh(c'),  gates = conv([h, input]) with a k x k kernel."""

    def __init__(self, in_channels, hidden_channels, kernel_size=5):
        super().__init__()
        self.hidden_channels = hidden_channels
        self.padding = kernel_size // 2
        # input channel order: [hidden, input], as the original
        self.gates = nn.Conv2d(hidden_channels + in_channels, 4 * hidden_channels,
                               kernel_size, padding=self.padding)

    def forward(self, input, state):
        """input (B, C_in, n, n); state (c, h) each (B, hidden, n, n) -> (c', h')."""
        c, h = state
        pre = self.gates(torch.cat((h, input), dim=1))  # (B, 4*hidden, n, n)
        return self.update(pre, c)

    def update(self, pre, c):
        """LSTM update from gate pre-activations (B, 4*hidden, n, n) -> (c', h')."""
        f, i, o, g = torch.chunk(pre, 4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return c, h

    def weight_columns(self, spans):
        """The gate weight restricted to input-channel spans [(start, stop), ...], concatenated."""
        w = self.gates.weight
        return torch.cat([w[:, a:b] for a, b in spans], dim=1)

    def partial_gates(self, x, weight, bias=None):
        """Share of the gate pre-activations from input channels x (B, C, n, n) with weight (4h, C, k, k)."""
        return F.conv2d(x, weight, bias, padding=self.padding)

    def constant_gates(self, vec, weight, size):
        """Share from a spatially constant map: vec (B, C) broadcast to (B, C, size, size).

        Exact and cheap: with zero padding, an output position's result depends only on which taps
        fall inside the map, and a (k x k) map holds every such case (corners, edges, interior).
        So convolve the constant over a k x k map and spread its rows and columns back to `size`.
        """
        k = weight.shape[-1]
        p = self.padding
        small = vec[:, :, None, None].expand(-1, -1, k, k)
        out = F.conv2d(small, weight, padding=p)  # (B, 4h, k, k)
        # the small map's first p and last p rows and columns stand for the full map's edges, its middle
        # row and column for every interior position
        out = torch.cat((out[:, :, :p], out[:, :, p:p + 1].expand(-1, -1, size - 2 * p, -1),
                         out[:, :, p + 1:]), dim=2)
        return torch.cat((out[..., :p], out[..., p:p + 1].expand(-1, -1, -1, size - 2 * p),
                          out[..., p + 1:]), dim=3)
