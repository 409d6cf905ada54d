"""The Generative Query Network (Eslami et al., Science 2018; supplementary Algorithms S1-S3).

`GQN(representation="pool", L=12, shared_core=False)` has the methods and argument order of the
original torch-gqn, so code written against it keeps working:
    forward(x, v, v_q, x_q, sigma) -> ELBO per scene (B,)
    generate(x, v, v_q)            -> images sampled from the prior, (B, 3, 64, 64) in [0, 1]
    reconstruct(x, v, v_q, x_q)    -> images from the posterior, (B, 3, 64, 64) in [0, 1]
    kl_divergence(x, v, v_q, x_q)  -> KL summed over the L steps, (B,)
with x (B, M, 3, 64, 64), v (B, M, 7), x_q (B, 3, 64, 64), v_q (B, 7), sigma a float.
`elbo_terms` gives ELBO, KL, negative log-likelihood and the reconstruction mean from one pass;
`render(r, v_q)` is generate's half after the encoding, for many samples of one encoded scene.

The scene encoding (`encode`) and the L-step unroll (`unroll`) are written once. `model.config`
holds every constructor argument, so `GQN(**config)` rebuilds a model from a checkpoint.
A state dict saved by torch-gqn loads with `torch_gqn.load_torch_gqn_state_dict` (exact; see there).

The seam for networks that are not the paper's (the registry at the end of this file): the configuration
names a representation and an observation head.
- A representation is built as `cls(x_dim, v_dim, r_dim)` and says, as class attributes, where its r lies
  (`on_grid`: on the cores' 16x16 grid, else 1x1) and whether it needs the query camera
  (`query_conditioned`: then it is called once per scene as phi(x (B, M, ...), v (B, M, 7), v_q (B, 7)) -> r,
  else once per view as phi(x (N, 3, 64, 64), v (N, 7)) and GQN sums over the views).
- An observation head is built as `cls(h_dim, x_dim, phi)` and called as head(u_L, r) -> the image's mean;
  the paper's is eta_g, a 1x1 conv of u_L (`EtaG`).
"""

import math

import torch
from torch import nn

import geometric
from core import GenerationCore, InferenceCore
from representation import Pool, Pyramid, Tower

UPSAMPLE_CHOICES = ("learned", "broadcast")
SCALE = 4  # the cores run at image_size / 4: x_q and u go down, h_g goes up, by 4x4 stride-4 convs


class EtaG(nn.Conv2d):
    """eta_g (Figure S2): the mean of the image's Gaussian from the canvas u_L, a 1x1 conv."""

    def __init__(self, h_dim, x_dim, phi=None):
        super().__init__(h_dim, x_dim, kernel_size=1)

    def forward(self, u, r=None):
        return super().forward(u)


class GQN(nn.Module):
    def __init__(self, representation="pool", L=12, shared_core=False, upsample="learned",
                 x_dim=3, v_dim=7, r_dim=256, h_dim=128, z_dim=3, image_size=64, observation="eta_g"):
        super().__init__()
        for name, value, choices in (("representation", representation, REPRESENTATIONS),
                                     ("observation", observation, OBSERVATION_HEADS),
                                     ("upsample", upsample, UPSAMPLE_CHOICES)):
            if value not in choices:
                raise ValueError(f"unknown {name} {value!r}: choose one of {sorted(choices)}")
        if L < 1:
            raise ValueError(f"L (the number of generative layers) must be at least 1, not {L}")
        self.config = dict(representation=representation, L=L, shared_core=bool(shared_core),
                           upsample=upsample, x_dim=x_dim, v_dim=v_dim, r_dim=r_dim, h_dim=h_dim,
                           z_dim=z_dim, image_size=image_size, observation=observation)
        self.representation = representation
        self.L = L
        self.shared_core = bool(shared_core)
        self.h_dim, self.z_dim, self.image_size = h_dim, z_dim, image_size
        self.grid = image_size // SCALE

        # psi, the representation network (Figure S1); named phi as in torch-gqn
        self.phi = REPRESENTATIONS[representation](x_dim, v_dim, r_dim)

        # the cores (Figure S2): one per step, or one shared by all steps
        def inference():
            return InferenceCore(x_dim, v_dim, r_dim, h_dim, self.grid, SCALE, upsample)

        def generation():
            return GenerationCore(v_dim, r_dim, h_dim, z_dim, self.grid, SCALE, upsample)

        if self.shared_core:
            self.inference_core, self.generation_core = inference(), generation()
        else:
            self.inference_core = nn.ModuleList(inference() for _ in range(L))
            self.generation_core = nn.ModuleList(generation() for _ in range(L))

        # heads: prior eta_pi(h_g), posterior eta_e(h_e), observation eta_g(u_L)
        self.eta_pi = nn.Conv2d(h_dim, 2 * z_dim, kernel_size=5, padding=2)
        self.eta_e = nn.Conv2d(h_dim, 2 * z_dim, kernel_size=5, padding=2)
        self.eta_g = OBSERVATION_HEADS[observation](h_dim, x_dim, self.phi)
        # Fixed inputs' share of the gates computed once per unroll where that saves work: a shared
        # core reuses it L times, and a broadcast 1x1 r costs a (5x5)-map conv instead of a 16x16 one.
        self.precompute_fixed = self.shared_core or (upsample == "broadcast" and not self.phi.on_grid)

    @property
    def unused_parameters(self):
        """Whether some parameters take no part in a training step, which a data-parallel wrapper must be
        told (find_unused_parameters): the cores' learned upsampling of r, where the representation's r is
        already on their grid."""
        return self.config["upsample"] == "learned" and self.phi.on_grid

    # -- Algorithms S2 (the ELBO) and S3 (generation), the pieces ------------------------------------

    def encode(self, x, v, v_q=None):
        """Scene representation r = sum_k psi(x_k, v_k): x (B, M, 3, H, W), v (B, M, 7) -> (B, r_dim, *, *).
        A query-conditioned network also takes the query cameras v_q (B, 7)."""
        if getattr(self.phi, "query_conditioned", False):
            return self.phi(x, v, v_q)
        B, M = x.shape[:2]
        r = self.phi(x.flatten(0, 1), v.flatten(0, 1))        # (B*M, r_dim, h, w)
        return r.view(B, M, *r.shape[1:]).sum(dim=1)          # (B, r_dim, h, w)

    def _cores(self, l):
        if self.shared_core:
            return self.inference_core, self.generation_core
        return self.inference_core[l], self.generation_core[l]

    def unroll(self, r, v_q, x_q=None, temperature=1.0, noise=None):
        """The L steps of Algorithms S2 and S3. With x_q: z from the posterior (S2), returns (u_L, KL (B,));
        else from the prior (S3), (u_L, None), its standard deviations scaled by `temperature` (1: the prior
        itself; 0: z at the prior's mean). noise: a callable noise(like) -> eps ~ N(0, 1) shaped like `like`
        (B, z, n, n), called once per step for z's draw; None draws with torch.randn_like."""
        B = v_q.shape[0]
        h, g, n = self.h_dim, self.grid, self.image_size
        c_g = h_g = r.new_zeros(B, h, g, g)
        u = r.new_zeros(B, h, n, n)
        c_e = h_e = r.new_zeros(B, h, g, g)
        kl = r.new_zeros(B) if x_q is not None else None
        pre = self.precompute_fixed
        inf_fixed = gen_fixed = None
        for l in range(self.L):
            inference_core, generation_core = self._cores(l)
            if gen_fixed is None or not self.shared_core:
                gen_fixed = generation_core.prepare(v_q, r, pre)
                if x_q is not None:
                    inf_fixed = inference_core.prepare(x_q, v_q, r, pre)
            # prior pi_l from the generator state before this step's update
            mu_pi, logvar_pi = torch.chunk(self.eta_pi(h_g), 2, dim=1)
            if x_q is None:
                eps = None if noise is None else noise(mu_pi)
                if temperature != 1.0:  # the same draw as at temperature 1, scaled
                    eps = (torch.randn_like(mu_pi) if eps is None else eps) * temperature
                z = sample_normal(mu_pi, logvar_pi, eps)
            else:
                c_e, h_e = inference_core(inf_fixed, c_e, h_e, h_g, u)
                mu_q, logvar_q = torch.chunk(self.eta_e(h_e), 2, dim=1)   # posterior q_l
                z = sample_normal(mu_q, logvar_q, None if noise is None else noise(mu_q))
                # in float32 even under bfloat16 autocast: the ELBO is a sum over many small terms
                kl_l = gaussian_kl(mu_q.float(), logvar_q.float(), mu_pi.float(), logvar_pi.float())
                kl = kl + kl_l.sum(dim=(1, 2, 3))
            c_g, h_g, u = generation_core(gen_fixed, c_g, h_g, u, z)
        return u, kl

    # -- the original's interface ---------------------------------------------------------------

    def elbo_terms(self, x, v, v_q, x_q, sigma, noise=None):
        """Algorithm S2, the ELBO, in one pass: dict of elbo, kl, nll (each (B,), nats per scene) and x_mu,
        the reconstruction mean. sigma: a float, or a tensor of one value per scene (B,), as training passes
        it: a compiled model then takes sigma as an input instead of a constant it recompiles for whenever
        sigma anneals, and DataParallel splits it with the batch. noise: z's draws, as in `unroll`."""
        r = self.encode(x, v, v_q)
        u, kl = self.unroll(r, v_q, x_q, noise=noise)
        x_mu = self.observe(u, r)                                # (B, 3, 64, 64)
        if torch.is_tensor(sigma):
            sigma = sigma.float().reshape(-1, 1, 1, 1)
        nll = -gaussian_log_prob(x_q.float(), x_mu.float(), sigma).sum(dim=(1, 2, 3))
        return dict(elbo=-nll - kl, kl=kl, nll=nll, x_mu=x_mu)

    def observe(self, u, r):
        """The mean of the image's Gaussian from the canvas u_L (and, for heads that use it, r)."""
        return self.eta_g(u, r)

    def forward(self, x, v, v_q, x_q, sigma, terms=False, noise=None):
        """ELBO per scene (B,) (Algorithm S2); with terms=True the tuple (elbo, kl, nll), still from one
        pass. noise: z's draws, as in `unroll`."""
        t = self.elbo_terms(x, v, v_q, x_q, sigma, noise)
        return (t["elbo"], t["kl"], t["nll"]) if terms else t["elbo"]

    def generate(self, x, v, v_q, temperature=1.0):
        """Algorithm S3: render the query views by sampling z from the prior: (B, 3, 64, 64) in [0, 1].
        A temperature below 1 narrows the prior (0: its mean, one image per scene; not the paper's, which
        samples)."""
        return self.render(self.encode(x, v, v_q), v_q, temperature)

    def render(self, r, v_q, temperature=1.0):
        """generate's second half (Algorithm S3 after the encoding), from a representation r
        (B, r_dim, *, *) already computed for v_q: with r expanded to N rows, N samples of one scene for
        the price of one encoding."""
        u, _ = self.unroll(r, v_q, temperature=temperature)
        return torch.clamp(self.observe(u, r), 0, 1)

    def reconstruct(self, x, v, v_q, x_q):
        """Render the query views by sampling z from the posterior given x_q: (B, 3, 64, 64) in [0, 1]."""
        r = self.encode(x, v, v_q)
        u, _ = self.unroll(r, v_q, x_q)
        return torch.clamp(self.observe(u, r), 0, 1)

    def kl_divergence(self, x, v, v_q, x_q):
        """KL(q || pi) summed over the L steps and z's dimensions: (B,)."""
        return self.unroll(self.encode(x, v, v_q), v_q, x_q)[1]


def sample_normal(mu, logvar, eps=None):
    """Reparameterised sample mu + std * eps, std = exp(logvar / 2), eps ~ N(0, 1) unless given."""
    return mu + torch.exp(0.5 * logvar) * (torch.randn_like(mu) if eps is None else eps)


def gaussian_kl(mu_q, logvar_q, mu_p, logvar_p):
    """KL(N(mu_q, var_q) || N(mu_p, var_p)) per element."""
    return 0.5 * (logvar_p - logvar_q + (torch.exp(logvar_q) + (mu_q - mu_p) ** 2) * torch.exp(-logvar_p) - 1)


def gaussian_log_prob(x, mu, sigma):
    """log N(x | mu, sigma^2) per element; sigma a float, or a tensor that broadcasts against x."""
    log_sigma = torch.log(sigma) if torch.is_tensor(sigma) else math.log(sigma)
    return -0.5 * ((x - mu) / sigma) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)


def bits_per_dim(nats, image_shape):
    """-log-likelihood in nats per scene -> bits per dimension (colour value) of the 8-bit query image.

    The model's density is over values scaled to [0, 1] (runtime.split_batch divides by 255), where the
    256 8-bit levels lie 1/255 apart: a level's probability is the density times 1/255, + log2(255) =
    7.994 bits per dimension. (Without it a sharp model on [0, 1] would report negative bits.)"""
    return nats / (math.prod(image_shape) * math.log(2)) + math.log2(255)


# -- the registry: the networks the configuration names ---------------------------------------------------
# The paper's (representation.py and EtaG above) and the geometric extension's beside them (geometric.py, not
# the paper's). A new network plugs in with an entry here, providing what this file's docstring says.
REPRESENTATIONS = {"pool": Pool, "tower": Tower, "pyramid": Pyramid, **geometric.REPRESENTATIONS}
OBSERVATION_HEADS = {"eta_g": EtaG, **geometric.OBSERVATION_HEADS}
