"""The original torch-gqn formulation, written plainly: the yardstick for tests and benchmarks/bench.py.

Same mathematics and the same parameter names as torch-gqn (its state dicts load here directly),
computed the way it computes them: four gate convs per conv-LSTM, the k16 s16 transposed convs run
as convolutions at every step, the representation run view by view, and one model pass per
quantity. `model.GQN` must compute the same function faster; tests/test_model.py checks that it
does, given the same weights and noise. Not used for training.
"""

import torch
from torch import nn

from model import gaussian_kl, gaussian_log_prob, sample_normal
from model import REPRESENTATIONS


class PlainConvLSTMCell(nn.Module):
    def __init__(self, in_channels, hidden, kernel_size=5):
        super().__init__()
        args = (in_channels + hidden, hidden, kernel_size)
        self.forget = nn.Conv2d(*args, padding=kernel_size // 2)
        self.input = nn.Conv2d(*args, padding=kernel_size // 2)
        self.output = nn.Conv2d(*args, padding=kernel_size // 2)
        self.state = nn.Conv2d(*args, padding=kernel_size // 2)

    def forward(self, input, state):
        c, h = state
        x = torch.cat((h, input), dim=1)
        c = torch.sigmoid(self.forget(x)) * c + torch.sigmoid(self.input(x)) * torch.tanh(self.state(x))
        return c, torch.sigmoid(self.output(x)) * torch.tanh(c)


class PlainInferenceCore(nn.Module):
    def __init__(self, x_dim=3, v_dim=7, r_dim=256, h_dim=128, grid=16, scale=4):
        super().__init__()
        self.v_dim = v_dim
        self.downsample_x = nn.Conv2d(x_dim, x_dim, scale, stride=scale, bias=False)
        self.upsample_v = nn.ConvTranspose2d(v_dim, v_dim, grid, stride=grid, bias=False)
        self.upsample_r = nn.ConvTranspose2d(r_dim, r_dim, grid, stride=grid, bias=False)
        self.downsample_u = nn.Conv2d(h_dim, h_dim, scale, stride=scale, bias=False)
        self.core = PlainConvLSTMCell(x_dim + v_dim + r_dim + 2 * h_dim, h_dim)

    def forward(self, x, v, r, c_e, h_e, h_g, u):
        x = self.downsample_x(x)
        v = self.upsample_v(v.view(-1, self.v_dim, 1, 1))
        if r.shape[2] != h_e.shape[2]:
            r = self.upsample_r(r)
        u = self.downsample_u(u)
        return self.core(torch.cat((x, v, r, h_g, u), dim=1), (c_e, h_e))


class PlainGenerationCore(nn.Module):
    def __init__(self, v_dim=7, r_dim=256, h_dim=128, z_dim=3, grid=16, scale=4):
        super().__init__()
        self.v_dim = v_dim
        self.upsample_v = nn.ConvTranspose2d(v_dim, v_dim, grid, stride=grid, bias=False)
        self.upsample_r = nn.ConvTranspose2d(r_dim, r_dim, grid, stride=grid, bias=False)
        self.core = PlainConvLSTMCell(v_dim + r_dim + z_dim, h_dim)
        self.upsample_h = nn.ConvTranspose2d(h_dim, h_dim, scale, stride=scale, bias=False)

    def forward(self, v, r, c_g, h_g, u, z):
        v = self.upsample_v(v.view(-1, self.v_dim, 1, 1))
        if r.shape[2] != h_g.shape[2]:
            r = self.upsample_r(r)
        c_g, h_g = self.core(torch.cat((v, r, z), dim=1), (c_g, h_g))
        return c_g, h_g, self.upsample_h(h_g) + u


class PlainGQN(nn.Module):
    """torch-gqn's GQN: learned upsampling only; x_dim, v_dim, ... as in model.GQN."""

    def __init__(self, representation="pool", L=12, shared_core=False,
                 x_dim=3, v_dim=7, r_dim=256, h_dim=128, z_dim=3, image_size=64):
        super().__init__()
        grid = image_size // 4
        self.L, self.shared_core, self.h_dim, self.grid, self.image_size = \
            L, shared_core, h_dim, grid, image_size
        self.phi = REPRESENTATIONS[representation](x_dim, v_dim, r_dim)
        if shared_core:
            self.inference_core = PlainInferenceCore(x_dim, v_dim, r_dim, h_dim, grid)
            self.generation_core = PlainGenerationCore(v_dim, r_dim, h_dim, z_dim, grid)
        else:
            self.inference_core = nn.ModuleList(
                PlainInferenceCore(x_dim, v_dim, r_dim, h_dim, grid) for _ in range(L))
            self.generation_core = nn.ModuleList(
                PlainGenerationCore(v_dim, r_dim, h_dim, z_dim, grid) for _ in range(L))
        self.eta_pi = nn.Conv2d(h_dim, 2 * z_dim, kernel_size=5, padding=2)
        self.eta_g = nn.Conv2d(h_dim, x_dim, kernel_size=1)
        self.eta_e = nn.Conv2d(h_dim, 2 * z_dim, kernel_size=5, padding=2)

    def _core(self, cores, l):
        return cores if self.shared_core else cores[l]

    def forward(self, x, v, v_q, x_q, sigma):
        """ELBO per scene, as torch-gqn's forward (one view of the context at a time)."""
        B, M = x.shape[:2]
        r = sum(self.phi(x[:, k], v[:, k]) for k in range(M))
        c_g = h_g = c_e = h_e = x.new_zeros(B, self.h_dim, self.grid, self.grid)
        u = x.new_zeros(B, self.h_dim, self.image_size, self.image_size)
        elbo = 0
        for l in range(self.L):
            mu_pi, logvar_pi = torch.split(self.eta_pi(h_g), self.eta_pi.out_channels // 2, dim=1)
            c_e, h_e = self._core(self.inference_core, l)(x_q, v_q, r, c_e, h_e, h_g, u)
            mu_q, logvar_q = torch.split(self.eta_e(h_e), self.eta_e.out_channels // 2, dim=1)
            z = sample_normal(mu_q, logvar_q)
            c_g, h_g, u = self._core(self.generation_core, l)(v_q, r, c_g, h_g, u, z)
            elbo = elbo - gaussian_kl(mu_q, logvar_q, mu_pi, logvar_pi).sum(dim=(1, 2, 3))
        return elbo + gaussian_log_prob(x_q, self.eta_g(u), sigma).sum(dim=(1, 2, 3))
