"""Representation networks psi(x, v) of the GQN (paper, Figure S1): Pool (default), Tower, Pyramid.

Each maps one image x (N, 3, 64, 64) in [0, 1] and its viewpoint v (N, 7) to a representation:
Pool and Pyramid give r (N, r_dim, 1, 1), Tower gives r (N, r_dim, 16, 16). The scene
representation is the sum over the context views (see `model.GQN.encode`). Parameter names match
the original torch-gqn (`conv1`..`conv8`; the pyramid's `net.0`..`net.6`), so its state dicts load.
Channel widths derive from r_dim (256 in the paper): r_dim and r_dim // 2 in the tower, r_dim / 8,
/ 4, / 2, 1 in the pyramid.
"""

import math
from contextlib import nullcontext

import torch
from torch import nn
from torch.nn import functional as F


class Tower(nn.Module):
    """Figure S1 'tower': two residual blocks, the viewpoint broadcast and concatenated at 16x16."""

    on_grid = True  # r is (N, r_dim, 16, 16), on the cores' grid: the cores' learned upsampling of r goes unused

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


def _view_frame(v):
    """Cameras v (N, 7) -> their positions (N, 3) and the rows of their camera axes (N, 3, 3): x (right),
    y (down), depth (forward)."""
    pos, forward, right, up = camera_frame(v)
    return pos, torch.stack((right, -up, forward), dim=1)


def _to_image(x, y, depth):
    """Camera coordinates, each (...), -> grid_sample's image coordinates (..., 2) (pinhole, field of view
    FOV_DEG). Geometry without parameters: no autograd (the products are written straight into place)."""
    scale = depth.clamp(min=1e-3).mul_(math.tan(math.radians(FOV_DEG) / 2)).reciprocal_()
    grid = x.new_empty(x.shape + (2,))
    torch.mul(x, scale, out=grid[..., 0])
    torch.mul(y, scale, out=grid[..., 1])
    return grid


def project(points, v):
    """World points (N, P, 3) seen by cameras v (N, 7) -> (image coordinates (N, P, 2), depth (N, P)).

    The coordinates are grid_sample's (align_corners=False): x from -1 (left edge) to 1 (right edge),
    y from -1 (top) to 1 (bottom); depth is along the viewing direction."""
    pos, frame = _view_frame(v)
    cam = torch.bmm(points - pos[:, None], frame.transpose(1, 2))          # (N, P, 3) in camera axes
    return _to_image(*cam.unbind(-1)), cam[..., 2]


def project_rays(origin, dirs, t, v):
    """The points origin + t * dir along rays, seen by cameras v (N, 7): origin (N, 3), dirs (N, R, 3),
    t (N, D) -> (image coordinates (N, R, D, 2), depth (N, R, D)), as `project` gives them for the points
    (N, R * D, 3) in ray, depth order. A camera's coordinates are affine along a ray, so the rays are
    brought to the camera's axes once and not each of their D points: D times less matrix work."""
    pos, frame = _view_frame(v)
    start = torch.bmm((origin - pos)[:, None], frame.transpose(1, 2))      # (N, 1, 3) in camera axes
    step = torch.bmm(dirs, frame.transpose(1, 2))                          # (N, R, 3)
    t = t[:, None, :]                                                      # (N, 1, D)
    x, y, depth = (torch.addcmul(start[..., i, None], step[..., i, None], t) for i in range(3))  # (N, R, D)
    return _to_image(x, y, depth), depth


def _weigh(w, values):
    """The weighted sum over channels w (C,) . values (..., C, P) -> (..., P), as a batched matrix-vector
    product: `w @ values` gives the same but first copies values with its channels last (3x the time)."""
    row = w.view((1,) * (values.dim() - 1) + (-1,))                      # (1, ..., 1, C): a batch of one row
    return torch.matmul(row, values)[..., 0, :]


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
    on_grid = True
    scale = 2  # the rendering's pixels per grid cell along each side: 32x32 rays on the 16x16 grid

    def __init__(self, x_dim=3, v_dim=7, r_dim=256, features=8, hidden=32, depths=16, rays=32, agreement_vote=False,
                 frustum_conv=False, view_net=False):
        super().__init__()
        direct = self.scale ** 2 * (x_dim + 1)               # rendered colour and opacity, per grid cell
        if r_dim <= direct:
            raise ValueError(f"the geometric representation needs r_dim > {direct}, not {r_dim}")
        self.depths, self.rays = depths, rays
        self.features = nn.Sequential(                       # per context view, at 32x32
            nn.Conv2d(x_dim, features, 3, padding=1), nn.ReLU(),
            nn.Conv2d(features, features, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(features, features, 3, padding=1))
        self.sharpness = nn.Parameter(torch.tensor(4.0))     # of the weights of views near the query camera
        # per point and view, a vote on whether the view sees the point (zero at first: no vote): a linear
        # function of what the view sees there, and with agreement_vote of how far that is from the views'
        # mean (an occluded view sees something else). Without it, vote_mean's term is the same for every
        # view and cancels in the softmax: it has no effect, and is kept so that the models trained so,
        # before agreement_vote existed, load and compute as they did.
        self.agreement_vote = bool(agreement_vote)
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
        # with frustum_conv, a small 3D CNN over the query camera's frustum (rays x rays x depths) corrects
        # each point's opacity logit from its neighbours' features and carved occupancy: the per-point MLP
        # sees one point, and which part of the carved hull is the object is a question of its shape. Its
        # last layer starts at zero, so the network starts as without it.
        self.frustum = None
        if frustum_conv:
            c = 8
            self.frustum = nn.Sequential(
                nn.Conv3d(hidden + 2, c, 1), nn.ReLU(),
                nn.Conv3d(c, c, 3, padding=2, dilation=2), nn.ReLU(),   # with the next: 7x7x7 points seen
                nn.Conv3d(c, 1, 3, padding=1))
            nn.init.zeros_(self.frustum[-1].weight)
            nn.init.zeros_(self.frustum[-1].bias)
        # with view_net, a small per-view MLP adds to each view's vote at each point, from what the view sees
        # there, how far that is from the views' mean and the views' variance: a learned, non-linear judgement of
        # whether the view sees the point (the linear votes cannot tell which of three disagreeing views is
        # occluded). Its logits reach the 64x64 pass too. Last layer zero at first: it starts as without it.
        self.view_net = None
        if view_net:
            self.view_net = nn.Sequential(
                nn.Linear(3 * (features + x_dim), 16), nn.ReLU(),
                nn.Linear(16, 1))
            nn.init.zeros_(self.view_net[-1].weight)
            nn.init.zeros_(self.view_net[-1].bias)
        out = hidden + x_dim + 2                             # + composited colour, opacity, depth
        self.out = nn.Sequential(                            # 32x32 rays -> the 16x16 grid
            nn.Conv2d(out, r_dim, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(r_dim, r_dim, 3, padding=1), nn.ReLU(),
            nn.Conv2d(r_dim, r_dim - direct, 3, padding=1))

    def query_rays(self, v_q, rays=None):
        """The query view's pixel rays, `rays` per side (default self.rays): the cameras' positions (B, 3),
        the rays' directions (B, rays * rays, 3) in row, column order, and the depths t (B, D) of the
        `depths` points on each ray, across the scene's sphere."""
        pos, forward, right, up = camera_frame(v_q)
        n, d = rays or self.rays, self.depths
        tan_half = math.tan(math.radians(FOV_DEG) / 2)
        c = (torch.arange(n, device=v_q.device, dtype=v_q.dtype) + 0.5) * 2 / n - 1   # pixel centres in [-1, 1]
        u, w = c[None, :], -c[:, None]                                                # columns, rows (top = +1)
        dirs = (forward[:, None, None] + tan_half * (u[None, ..., None] * right[:, None, None]
                                                    + w[None, ..., None] * up[:, None, None]))  # (B, n, n, 3)
        dist = pos.norm(dim=-1, keepdim=True)                                          # (B, 1)
        t = torch.linspace(-1, 1, d, device=v_q.device, dtype=v_q.dtype) * SCENE_RADIUS + dist  # (B, D)
        return pos, dirs.reshape(pos.shape[0], -1, 3), t

    def query_points(self, v_q, rays=None):
        """The points along the query pixels' rays: (B, rays * rays * depths, 3) in row, column, depth
        order, and their depths (B, D)."""
        pos, dirs, t = self.query_rays(v_q, rays)
        pts = pos[:, None, None] + dirs[:, :, None] * t[:, None, :, None]                # (B, R, D, 3)
        return pts.reshape(pos.shape[0], -1, 3), t

    @staticmethod
    def _grid(rays, v, M):
        """Where the points along the query rays (`query_rays`: per scene B) fall in each of the M context
        views v (B*M, 7): grid_sample's (B*M, P, 1, 2), P = rays x depths; a point behind a camera is
        sent outside its image."""
        # geometry: no parameters, and in float32 under bfloat16 autocast (its matrix product would cast
        # the points to bfloat16, a quarter of a pixel off at 64x64); the meta device (bench.py's FLOP
        # count) has no autocast to turn off
        device = v.device.type
        float32 = torch.autocast(device, enabled=False) if torch.amp.is_autocast_available(device) else nullcontext()
        with torch.no_grad(), float32:
            origin, dirs, t = (a.float().repeat_interleave(M, dim=0) for a in rays)
            grid, depth = project_rays(origin, dirs, t, v.float())
            grid[..., 0].masked_fill_(depth <= 1e-3, 2.0)                     # x = 2: off the image
        return grid.view(grid.shape[0], -1, 1, 2)

    def _nearest(self, seen, mean, cos, vote_seen, vote_mean, view_logits=None):
        """The views' values seen (B, M, C, P) averaged with weights that favour views near the query camera
        (cos (B, M)) and, by a learned vote, views that see the point (with agreement_vote: whose value is
        near the views' mean (B, C, P), as an occluded view's is not). -> (B, C, P). Without agreement_vote,
        mean may be None: vote_mean's term is the same for every view and cancels in the softmax, and is
        computed only where the mean is at hand, so that vote_mean takes part in the step (as
        DistributedDataParallel expects of every parameter). view_logits (B, M, P), with view_net: added
        to the vote."""
        vote = _weigh(vote_seen, seen)                                           # (B, M, P)
        if view_logits is not None:
            vote = vote + view_logits
        if self.agreement_vote:
            vote = vote - _weigh(vote_mean, (seen - mean[:, None]).abs())
        elif mean is not None:
            vote = vote - _weigh(vote_mean, mean)[:, None]                        # the same for every view
        near = torch.softmax(self.sharpness * cos[:, :, None] + vote, dim=1)   # (B, M, P)
        return (seen * near[:, :, None]).sum(dim=1)

    @staticmethod
    def _composite(alpha, values):
        """Front-to-back alpha compositing along R rays of D points: opacities (B, R, D) and values
        (B, C, R, D) -> (B, C, R)."""
        free = torch.cumprod(torch.cat((torch.ones_like(alpha[..., :1]), 1 - alpha[..., :-1]), -1), -1)
        return (values * (alpha * free)[:, None]).sum(dim=-1)

    @staticmethod
    def opacity(learned, carve):
        """A point's opacity from the learned logit and the carving logit, both (B, P): their sum."""
        return torch.sigmoid(learned + carve)

    def _carve(self, colours):
        """The opacity logit of space carving from the views' colours (B, M, x_dim, P) -> (B, P): solid where
        even the dimmest view sees something brighter than the black background."""
        return self.carve_gain * (colours.amax(dim=2).amin(dim=1) - self.carve_level)

    def _points(self, features, mlp=None):
        """A per-point MLP (self.point's Linear layers, or mlp's) on channel-first features (B, C, P) -> (B, C', P)."""
        for layer in self.point if mlp is None else mlp:
            features = torch.baddbmm(layer.bias[:, None], layer.weight.expand(features.shape[0], -1, -1), features) \
                if isinstance(layer, nn.Linear) else layer(features)
        return features

    def forward(self, x, v, v_q):
        """x (B, M, 3, 64, 64), v (B, M, 7), v_q (B, 7) -> r (B, r_dim, 16, 16).

        Per point the tensors are channel-first, (B, [M,] C, P) with P = rays x rays x depths in row, column,
        depth order, as grid_sample gives them: the means over the views and the compositing along the rays
        then read contiguous memory, and the composited rays come out as the (B, C, rays, rays) maps the
        convolutions take."""
        B, M, x_dim = x.shape[:3]
        n, d = self.rays, self.depths
        with torch.no_grad():
            rays = self.query_rays(v_q)                                     # pos, dirs (B, n * n, 3), t (B, D)
            cos = F.cosine_similarity(v[..., :3], v_q[:, None, :3], dim=-1)  # (B, M): views near the query
        t = rays[2]
        P = n * n * d
        grid = self._grid(rays, v.flatten(0, 1), M)                         # (B*M, P, 1, 2)
        images = x.flatten(0, 1)
        colours = F.grid_sample(images, grid.to(images.dtype), align_corners=False)  # (B*M, 3, P, 1), full size
        feats = self.features(images)                                       # (B*M, C, 32, 32)
        # in float32: CPU autocast runs grid_sample so anyway; CUDA's would run it in bfloat16, and the
        # means and variances over the views below with it
        feats = F.grid_sample(feats.float(), grid, align_corners=False)
        seen = torch.cat((feats, colours.to(feats.dtype)), dim=1).view(B, M, -1, P)   # (B, M, C+3, P)
        mean = seen.mean(dim=1)                                             # (B, C+3, P)
        var = (seen - mean[:, None]).pow(2).mean(dim=1)
        lowest = seen.amin(dim=1)
        view_logits = None
        if self.view_net is not None:
            judged = torch.cat((seen, (seen - mean[:, None]).abs(), var[:, None].expand_as(seen)), dim=2)
            view_logits = self._points(judged.flatten(0, 1), self.view_net).view(B, M, P)
        nearest = self._nearest(seen, mean, cos, self.vote_seen, self.vote_mean, view_logits)
        h = self._points(torch.cat((mean, var, lowest, nearest), dim=1))   # (B, hidden+1, P)
        learned = h[:, -1]                                                  # (B, P): the learned opacity logit
        carve = self._carve(seen[:, :, -x_dim:])
        if self.frustum is not None:
            volume = torch.cat((h, torch.sigmoid(carve)[:, None]), dim=1).view(B, -1, n, n, d)
            # channels last: its 3D convs take 70-79 ms instead of 125 at the demo's shape (README, Speed)
            volume = volume.contiguous(memory_format=torch.channels_last_3d)
            learned = learned + self.frustum(volume).reshape(B, P)
        alpha = self.opacity(learned, carve)
        rel_depth = (t - t.mean(dim=1, keepdim=True)) / SCENE_RADIUS        # (B, D) in [-1, 1]
        depth = rel_depth[:, None, None].expand(-1, 1, n * n, -1)           # (B, 1, rays, D)
        values = torch.cat((h[:, :-1].view(B, -1, n * n, d), nearest[:, -x_dim:].view(B, x_dim, n * n, d),
                            torch.ones_like(depth), depth), dim=1)          # (B, hidden + 5, rays, D)
        ray = self._composite(alpha.view(B, n * n, d), values).view(B, -1, n, n)   # (B, out, n, n)
        direct = self.direct(ray, learned.view(B, n, n, d), x, v, v_q, cos,
                             None if view_logits is None else view_logits.view(B, M, n, n, d))
        return torch.cat((self.out(ray), direct), dim=1)

    def direct(self, ray, learned, x, v, v_q, cos, view_logits=None):
        """The rendered colour and opacity, to the grid as they are: (B, 4 * scale^2, 16, 16)."""
        return F.pixel_unshuffle(ray[:, -5:-1], self.scale)

    @classmethod
    def rendering(cls, r, x_dim=3, opacity=False):
        """The query view as this network renders it, read back from r: colour on black, (B, 3, 32, 32)
        (64x64 for GeometricFine); with opacity, its opacity as a fourth channel."""
        return F.pixel_shuffle(r[:, -cls.scale ** 2 * (x_dim + 1):], cls.scale)[:, :x_dim + bool(opacity)]


class GeometricFine(Geometric):
    """Geometric, with its rendering of the query view made at the image's full resolution (64x64); not
    the paper's.

    Geometric renders 32x32 rays, so each ray's colour covers 2x2 pixels and a cube's edge is blurred
    over two of them. Here a second pass follows one ray per pixel, 64x64 x `depths` points, and only
    reads the context views' colours there (no CNN features, no per-point MLP: the pass costs grid
    samples, not convolutions). Each point's opacity combines the carving at that point with the
    learned logit of the 32x32 pass, interpolated to the pixel, as a product (`opacity`; both passes);
    its colour is the views' near-weighted colour, with the same learned vote. Composited, the 64x64
    colour and opacity reach the 16x16 grid 4x4 pixels per cell (64 channels of r; the 32x32 pass's
    features make the rest), so the cores see the scene's colours at the resolution they must draw
    them, and `rendering(r)` is 64x64.
    """

    scale = 4

    @staticmethod
    def opacity(learned, carve):
        """Carving's opacity times a learned factor that starts near 1 (sigmoid(3) = 0.95): inside the
        carved hull, where carving's logit is large, a sum's sigmoid would pass no gradient to the learned
        logit, and the hull's excess could never be cut away; a product can cut it."""
        return torch.sigmoid(carve) * torch.sigmoid(learned + 3)

    def direct(self, ray, learned, x, v, v_q, cos, view_logits=None):
        B, x_dim, size, d = x.shape[0], x.shape[2], x.shape[-1], self.depths
        colours, alpha, view_logits = self.pixel_points(learned, x, v, v_q, view_logits)
        mean = colours.mean(dim=1) if self.agreement_vote else None
        nearest = self._nearest(colours, mean, cos, self.vote_seen[-x_dim:], self.vote_mean[-x_dim:],
                                view_logits)                                      # (B, 3, P)
        values = torch.cat((nearest, torch.ones_like(nearest[:, :1])), dim=1).view(B, x_dim + 1, size * size, d)
        image = self._composite(alpha.view(B, size * size, d), values.to(alpha.dtype))
        return F.pixel_unshuffle(image.view(B, x_dim + 1, size, size), self.scale)

    def pixel_points(self, learned, x, v, v_q, view_logits=None):
        """The points of the pass's pixel rays (P = size * size * depths, in row, column, depth order): each
        context view's colour there (B, M, 3, P) and their opacity (B, P), from the 32x32 pass's learned
        opacity logits (B, rays, rays, D); with view_net its view logits (B, M, rays, rays, D), brought to the
        pixels' rays (B, M, P) (else None)."""
        B, M, x_dim, size = x.shape[0], x.shape[1], x.shape[2], x.shape[-1]
        grid_size = self.rays // 2
        if size != grid_size * self.scale:
            raise ValueError(f"GeometricFine renders {grid_size * self.scale}x{grid_size * self.scale} images, "
                             f"not {size}x{size}")
        with torch.no_grad():
            rays = self.query_rays(v_q, size)                              # one per pixel
        images = x.flatten(0, 1)
        grid = self._grid(rays, v.flatten(0, 1), M)                        # (B*M, size * size * D, 1, 2)
        colours = F.grid_sample(images, grid.to(images.dtype), align_corners=False)  # (B*M, 3, P, 1)
        colours = colours.view(B, M, x_dim, -1)                                  # (B, M, 3, P)
        learned = F.interpolate(learned.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False)
        if view_logits is not None:
            view_logits = F.interpolate(view_logits.flatten(0, 1).permute(0, 3, 1, 2), size=size, mode="bilinear",
                                        align_corners=False).permute(0, 2, 3, 1).reshape(B, M, -1)
        alpha = self.opacity(learned.permute(0, 2, 3, 1).reshape(B, -1), self._carve(colours))  # (B, P)
        return colours, alpha, view_logits


REPRESENTATIONS = {"pool": Pool, "tower": Tower, "pyramid": Pyramid, "geometric": Geometric,
                   "geometric_fine": GeometricFine}


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
