"""Representation networks psi(x, v) of the GQN (paper, Figure S1): Pool (default), Tower, Pyramid.

Each maps one image x (N, 3, 64, 64) in [0, 1] and its viewpoint v (N, 7) to a representation:
Pool and Pyramid give r (N, r_dim, 1, 1), Tower gives r (N, r_dim, 16, 16). The scene
representation is the sum over the context views (see `model.GQN.encode`). Parameter names match
the original torch-gqn (`conv1`..`conv8`; the pyramid's `net.0`..`net.6`), so its state dicts load.
Channel widths derive from r_dim (256 in the paper): r_dim and r_dim // 2 in the tower, r_dim / 8,
/ 4, / 2, 1 in the pyramid.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F


class Tower(nn.Module):
    """Figure S1 'tower': two residual blocks, the viewpoint broadcast and concatenated at 16x16."""

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

    def forward(self, x, v):
        return super().forward(x, v).mean(dim=(2, 3), keepdim=True)  # (N, r, 1, 1)


class Pyramid(nn.Module):
    """Figure S1 'pyramid': the viewpoint broadcast to 64x64 and concatenated before four convs."""

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


# -- a representation that uses the cameras' geometry (not in the paper) ------------------------------

FOV_DEG = 45.0       # the cameras' field of view: DeepMind's Shepard-Metzler data and the built-in scenes
SCENE_RADIUS = 1.2   # the object lies within this distance of the origin (world units; 5 cubes reach ~0.9)


def camera_frame(v):
    """Viewpoints v (N, 7) in the project's order (x, y, z, cos yaw, sin yaw, cos pitch, sin pitch) ->
    position, forward, right, up, each (N, 3): the convention of dataset/shepard_metzler.py (no roll)."""
    pos, cy, sy, cp, sp = v[:, :3], v[:, 3], v[:, 4], v[:, 5], v[:, 6]
    forward = torch.stack((cp * cy, -cp * sy, sp), dim=-1)
    right = torch.stack((-sy, -cy, torch.zeros_like(sy)), dim=-1)
    up = torch.cross(right, forward, dim=-1)
    return pos, forward, right, up


def project(points, v):
    """World points (N, P, 3) seen by cameras v (N, 7) -> (image coordinates (N, P, 2), depth (N, P)).

    The coordinates are grid_sample's (align_corners=False): x from -1 (left edge) to 1 (right edge),
    y from -1 (top) to 1 (bottom); depth is along the viewing direction."""
    pos, forward, right, up = camera_frame(v)
    frame = torch.stack((right, -up, forward), dim=1)                     # (N, 3, 3): rows x, y, depth
    cam = torch.bmm(points - pos[:, None], frame.transpose(1, 2))          # (N, P, 3) in camera axes
    depth = cam[..., 2]
    return cam[..., :2] / (depth.clamp(min=1e-3)[..., None] * math.tan(math.radians(FOV_DEG) / 2)), depth


class Geometric(nn.Module):
    """A query-conditioned representation r(context, v_q) that uses where the cameras are; not the paper's.

    The paper's networks encode each context view on its own and sum the codes, so the generator must
    learn 3D geometry from data: about 1e5 GPU steps on Shepard-Metzler (README, "What makes it learn").
    This network does the projective part with the known cameras instead, in the manner of multi-view
    stereo and of the epipolar GQN (Tobin et al., NeurIPS 2019): along the ray of each of the query
    view's 32x32 pixels it takes `depths` points across the scene's sphere (radius SCENE_RADIUS),
    projects every point into every context view (pinhole, field of view FOV_DEG), reads a small CNN's
    features and the colour there, and averages them over the views with their variance (a point on
    the object looks alike from every view that sees it; a point in empty space does not). A per-point
    MLP turns that into a feature and an opacity, composited front to back along the ray. The result,
    brought to the cores' 16x16 grid, is r (N, r_dim, 16, 16); the generator, its latent z and the
    ELBO are the paper's. Made for scenes seen from outside, around the origin (Shepard-Metzler);
    a camera inside a room (rooms, mazes) would need other depths.
    """

    query_conditioned = True

    def __init__(self, x_dim=3, v_dim=7, r_dim=256, features=8, hidden=32, depths=16, rays=32):
        super().__init__()
        direct = 4 * (x_dim + 1)                             # colour and opacity, 2x2 rays per grid cell
        if r_dim <= direct:
            raise ValueError(f"the geometric representation needs r_dim > {direct}, not {r_dim}")
        self.depths, self.rays = depths, rays
        self.features = nn.Sequential(                       # per context view, at 32x32
            nn.Conv2d(x_dim, features, 3, padding=1), nn.ReLU(),
            nn.Conv2d(features, features, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(features, features, 3, padding=1))
        self.sharpness = nn.Parameter(torch.tensor(4.0))     # of the weights of views near the query camera
        # per point and view, a vote on whether the view sees the point: a linear function of what the
        # view sees there and of how that differs from the views' mean (zero at first: no vote)
        self.vote_seen = nn.Parameter(torch.zeros(features + x_dim))
        self.vote_mean = nn.Parameter(torch.zeros(features + x_dim))
        # opacity starts as space carving: solid where every view sees something brighter than the black
        # background there (a point in empty space projects onto background in some view)
        self.carve_gain = nn.Parameter(torch.tensor(50.0))
        self.carve_level = nn.Parameter(torch.tensor(0.1))
        point_in = 4 * (features + x_dim)                    # over the views: mean, variance, min, near-weighted
        self.point = nn.Sequential(                          # per point: a feature and an opacity logit
            nn.Linear(point_in, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden + 1))
        out = hidden + x_dim + 2                             # + composited colour, opacity, depth
        self.out = nn.Sequential(                            # 32x32 rays -> the 16x16 grid
            nn.Conv2d(out, r_dim, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(r_dim, r_dim, 3, padding=1), nn.ReLU(),
            nn.Conv2d(r_dim, r_dim - direct, 3, padding=1))

    def query_points(self, v_q):
        """Points along the query pixels' rays: (B, rays * rays * depths, 3), and their depths (B, 1, D)."""
        pos, forward, right, up = camera_frame(v_q)
        n, d = self.rays, self.depths
        tan_half = math.tan(math.radians(FOV_DEG) / 2)
        c = (torch.arange(n, device=v_q.device, dtype=v_q.dtype) + 0.5) * 2 / n - 1   # pixel centres in [-1, 1]
        u, w = c[None, :], -c[:, None]                                                # columns, rows (top = +1)
        dirs = (forward[:, None, None] + tan_half * (u[None, ..., None] * right[:, None, None]
                                                    + w[None, ..., None] * up[:, None, None]))  # (B, n, n, 3)
        dist = pos.norm(dim=-1, keepdim=True)                                          # (B, 1)
        t = torch.linspace(-1, 1, d, device=v_q.device, dtype=v_q.dtype) * SCENE_RADIUS + dist  # (B, D)
        pts = pos[:, None, None, None] + dirs[:, :, :, None] * t[:, None, None, :, None]        # (B, n, n, D, 3)
        return pts.reshape(pos.shape[0], -1, 3), t

    def forward(self, x, v, v_q):
        """x (B, M, 3, 64, 64), v (B, M, 7), v_q (B, 7) -> r (B, r_dim, 16, 16)."""
        B, M = x.shape[:2]
        with torch.no_grad():
            pts, t = self.query_points(v_q)                                 # (B, P, 3)
        P = pts.shape[1]
        with torch.no_grad():                                               # geometry: no parameters
            grid, depth = project(pts.repeat_interleave(M, dim=0), v.flatten(0, 1))     # (B*M, P, 2)
            grid = torch.where(depth[..., None] > 1e-3, grid, torch.full_like(grid, 2.0))  # behind: outside
        grid = grid[:, :, None]                                             # (B*M, P, 1, 2)
        images = x.flatten(0, 1)
        colours = F.grid_sample(images, grid.to(images.dtype), align_corners=False)  # (B*M, 3, P, 1), full size
        feats = self.features(images)                                       # (B*M, C, 32, 32)
        feats = F.grid_sample(feats, grid.to(feats.dtype), align_corners=False)
        seen = torch.cat((feats, colours.to(feats.dtype)), dim=1).view(B, M, -1, P).transpose(2, 3)  # (B, M, P, C+3)
        mean = seen.mean(dim=1)
        var = (seen - mean[:, None]).pow(2).mean(dim=1)
        lowest = seen.amin(dim=1)
        with torch.no_grad():
            cos = F.cosine_similarity(v[..., :3], v_q[:, None, :3], dim=-1)  # (B, M): views near the query
        # each view's weight: near the query camera, and seeing what the others see there (not occluded)
        vote = seen @ self.vote_seen - (mean @ self.vote_mean)[:, None]       # (B, M, P)
        near = torch.softmax(self.sharpness * cos[:, :, None] + vote, dim=1)[..., None]
        nearest = (seen * near).sum(dim=1)          # the views' colours, weighted: (B, P, C+3)
        h = self.point(torch.cat((mean, var, lowest, nearest), dim=-1))     # (B, P, hidden+1)
        carve = seen[..., -x.shape[2]:].amax(dim=-1).amin(dim=1)            # (B, P): dimmest view's brightness
        logit = h[..., -1] + self.carve_gain * (carve - self.carve_level)
        n, d = self.rays, self.depths
        h = h.view(B * n * n, d, -1)                                        # one row per ray
        alpha = torch.sigmoid(logit).view(B * n * n, d)                      # (rays, D) opacities
        free = torch.cumprod(torch.cat((torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]), -1), -1)
        weight = (alpha * free)[:, None]                                    # (rays, 1, D): front to back
        colour = nearest[..., -x.shape[2]:].reshape(B * n * n, d, -1)
        rel_depth = (t - t.mean(dim=1, keepdim=True)) / SCENE_RADIUS        # (B, D) in [-1, 1]
        depth = rel_depth.repeat_interleave(n * n, dim=0)[:, :, None]       # (rays, D, 1)
        values = torch.cat((h[..., :-1], colour, torch.ones_like(depth), depth), dim=-1)
        ray = torch.bmm(weight, values).view(B, n, n, -1).permute(0, 3, 1, 2)  # (B, out, n, n)
        image = F.pixel_unshuffle(ray[:, -5:-1], 2)  # the rendered colour and opacity, to the grid as they are
        return torch.cat((self.out(ray), image), dim=1)

    @staticmethod
    def rendering(r, x_dim=3):
        """The query view as this network renders it, read back from r: colour on black, (B, 3, 32, 32)."""
        return F.pixel_shuffle(r[:, -4 * (x_dim + 1):], 2)[:, :x_dim]


REPRESENTATIONS = {"pool": Pool, "tower": Tower, "pyramid": Pyramid, "geometric": Geometric}


def kaiming_init(phi):
    """He-normal weights (fan in, ReLU gain) and zero biases for every conv of a representation network.

    PyTorch's default init (torch-gqn's) shrinks a signal's second moment about six-fold per conv and
    ReLU, and the images are mostly black: at init the image accounts for about 1 % of r, the broadcast
    viewpoint for the rest, so the generator has almost nothing to learn the scene from. With this init
    the image's share is about ten times larger. Not in the paper, which does not say how it initialises."""
    for module in phi.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return phi
