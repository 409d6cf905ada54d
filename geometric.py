"""The geometric extension (not the paper's): representations that use where the cameras are, and
the observation head that shows their rendering of the query view.

The paper's representation networks (representation.py) encode each context view on its own and sum
the codes, so the generator must learn 3D geometry from data, which takes on the order of 1e5 GPU
steps (spec, and README "What the demo shows"). `Geometric` does the projective part with the known
cameras instead, in the manner of multi-view stereo and of the epipolar GQN (Tobin et al., NeurIPS
2019). `GeometricFine` adds a second pass that renders the query view at the image's full
resolution, and `RenderGate` is an observation head that shows that rendering where a learned gate
judges it right. These two are made for scenes seen from outside, around the origin, on black
(Shepard-Metzler). `GeometricRooms` is made for cameras inside a room (the built-in rooms and
DeepMind's rooms_*): its rays end at the room's walls, floor or sky, and what stands in front of
them is found by agreement across the views. They reach GQN through model.py's registries
(model.REPRESENTATIONS and model.OBSERVATION_HEADS, which take this module's REPRESENTATIONS and
OBSERVATION_HEADS): the cores, z and the ELBO stay the paper's.
"""

import math
from contextlib import nullcontext

import torch
from torch import nn
from torch.nn import functional as F

from dataset import jaco
from dataset.rooms import ROOM_HALF, WALL_HEIGHT

# the cameras' field of view: DeepMind's Shepard-Metzler data and the built-in scenes
FOV_DEG = 45.0
# the object lies within this distance of the origin (world units; 5 cubes reach ~0.9)
SCENE_RADIUS = 1.2


def camera_frame(v):
    """Viewpoints v (N, 7) in the project's order (x, y, z, cos yaw, sin yaw, cos pitch, sin pitch)
    -> position, forward, right, up, each (N, 3): the convention of dataset/shepard_metzler.py (no
    roll)."""
    pos, cy, sy, cp, sp = v[:, :3], v[:, 3], v[:, 4], v[:, 5], v[:, 6]
    forward = torch.stack((cp * cy, -cp * sy, sp), dim=-1)
    right = torch.stack((-sy, -cy, torch.zeros_like(sy)), dim=-1)
    up = torch.cross(right, forward, dim=-1)
    return pos, forward, right, up


def _view_frame(v):
    """Cameras v (N, 7) -> their positions (N, 3) and the rows of their camera axes (N, 3, 3): x
    (right), y (down), depth (forward)."""
    pos, forward, right, up = camera_frame(v)
    return pos, torch.stack((right, -up, forward), dim=1)


def _to_image(x, y, depth):
    """Camera coordinates, each (...), -> grid_sample's image coordinates (..., 2) (pinhole, field
    of view FOV_DEG). Geometry without parameters: no autograd (the products are written straight
    into place)."""
    scale = depth.clamp(min=1e-3).mul_(math.tan(math.radians(FOV_DEG) / 2)).reciprocal_()
    grid = x.new_empty(x.shape + (2,))
    torch.mul(x, scale, out=grid[..., 0])
    torch.mul(y, scale, out=grid[..., 1])
    return grid


def pixel_rays(v, n):
    """Cameras v (N, 7) -> their positions (N, 3) and the directions (N, n * n, 3) of the rays
    through the centres of an n x n image's pixels, in row, column order (the top row first), each
    of unit length along the camera's forward axis: depth along the view is t in pos + t * dir."""
    pos, forward, right, up = camera_frame(v)
    tan_half = math.tan(math.radians(FOV_DEG) / 2)
    c = (torch.arange(n, device=v.device, dtype=v.dtype) + 0.5) * 2 / n - 1     # in [-1, 1]
    cols, rows = c[None, :], -c[:, None]                                        # top row = +1
    dirs = (forward[:, None, None]                                              # (N, n, n, 3)
            + tan_half * (cols[None, ..., None] * right[:, None, None]
                          + rows[None, ..., None] * up[:, None, None]))
    return pos, dirs.reshape(pos.shape[0], -1, 3)


def project(points, v):
    """World points (N, P, 3) seen by cameras v (N, 7) -> (image coordinates (N, P, 2),
    depth (N, P)).

    The coordinates are grid_sample's (align_corners=False): x from -1 (left edge) to 1 (right
    edge), y from -1 (top) to 1 (bottom); depth is along the viewing direction."""
    pos, frame = _view_frame(v)
    cam = torch.bmm(points - pos[:, None], frame.transpose(1, 2))       # (N, P, 3) in camera axes
    return _to_image(*cam.unbind(-1)), cam[..., 2]


def project_rays(origin, dirs, t, v):
    """The points origin + t * dir along rays, seen by cameras v (N, 7): origin (N, 3),
    dirs (N, R, 3), t (N, D) or per ray (N, R, D) -> (image coordinates (N, R, D, 2), depth
    (N, R, D)), as `project`
    gives them for the points (N, R * D, 3) in ray, depth order. A camera's coordinates are affine
    along a ray, so the rays are brought to the camera's axes once and not each of their D points:
    D times less matrix work."""
    pos, frame = _view_frame(v)
    start = torch.bmm((origin - pos)[:, None], frame.transpose(1, 2))   # (N, 1, 3) in camera axes
    step = torch.bmm(dirs, frame.transpose(1, 2))                          # (N, R, 3)
    t = t[:, None, :] if t.dim() == 2 else t                               # (N, 1 or R, D)
    x, y, depth = (torch.addcmul(start[..., i, None], step[..., i, None], t)   # each (N, R, D)
                   for i in range(3))
    return _to_image(x, y, depth), depth


def _weigh(w, values):
    """The weighted sum over channels w (C,) . values (..., C, P) -> (..., P), as a batched
    matrix-vector product (`w @ values` would first copy values with its channels last)."""
    row = w.view((1,) * (values.dim() - 1) + (-1,))     # (1, ..., 1, C): a batch of one row
    return torch.matmul(row, values)[..., 0, :]


class Geometric(nn.Module):
    """A query-conditioned representation r(context, v_q) that uses where the cameras are; not the
    paper's.

    Along the ray of each of the query view's 32x32 pixels it takes `depths` points across the
    scene's sphere (radius SCENE_RADIUS), projects every point into every context view (pinhole,
    field of view FOV_DEG), reads a small CNN's features and the colour there, and averages them
    over the views with their variance (a point on the object looks alike from every view that sees
    it; a point in empty space does not). A per-point MLP turns that into a feature and an opacity,
    composited front to back along the ray. The result, brought to the cores' 16x16 grid, is r (N,
    r_dim, 16, 16); the generator, its latent z and the ELBO are the paper's.
    """

    query_conditioned = True
    on_grid = True
    scale = 2  # the rendering's pixels per grid cell along each side: 32x32 rays on the 16x16 grid

    def __init__(self, x_dim=3, v_dim=7, r_dim=256, features=8, hidden=32, depths=16, rays=32):
        super().__init__()
        direct = self.scale ** 2 * (x_dim + 1)        # rendered colour and opacity, per grid cell
        if r_dim <= direct:
            raise ValueError(f"the geometric representation needs r_dim > {direct}, not {r_dim}")
        self.depths, self.rays = depths, rays
        self.features = nn.Sequential(                       # per context view, at 32x32
            nn.Conv2d(x_dim, features, 3, padding=1), nn.ReLU(),
            nn.Conv2d(features, features, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(features, features, 3, padding=1))
        # of the weights of views near the query camera
        self.sharpness = nn.Parameter(torch.tensor(4.0))
        # per point and view, a vote on whether the view sees the point (zero at first: no vote), a
        # linear function of what the view sees there; vote_mean weighs the views' mean, a term
        # common to every view that cancels in the softmax up to rounding (trained models carry it,
        # and compute with it)
        self.vote_seen = nn.Parameter(torch.zeros(features + x_dim))
        self.vote_mean = nn.Parameter(torch.zeros(features + x_dim))
        # opacity starts as space carving: solid where every view sees something brighter than the
        # black background there (a point in empty space projects onto background in some view)
        self.carve_gain = nn.Parameter(torch.tensor(50.0))
        self.carve_level = nn.Parameter(torch.tensor(0.1))
        point_in = 4 * (features + x_dim)      # over the views: mean, variance, min, near-weighted
        self.point = nn.Sequential(            # per point: a feature and an opacity logit
            nn.Linear(point_in, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden + 1))
        out = hidden + x_dim + 2                             # + composited colour, opacity, depth
        self.out = nn.Sequential(                            # 32x32 rays -> the 16x16 grid
            nn.Conv2d(out, r_dim, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(r_dim, r_dim, 3, padding=1), nn.ReLU(),
            nn.Conv2d(r_dim, r_dim - direct, 3, padding=1))

    def query_rays(self, v_q, rays=None):
        """The query view's pixel rays, `rays` per side (default self.rays): the cameras' positions
        (B, 3), the rays' directions (B, rays * rays, 3) in row, column order, and the depths
        t (B, D) of the `depths` points on each ray, across the scene's sphere."""
        pos, dirs = pixel_rays(v_q, rays or self.rays)
        dist = pos.norm(dim=-1, keepdim=True)                                 # (B, 1)
        span = torch.linspace(-1, 1, self.depths, device=v_q.device, dtype=v_q.dtype)
        return pos, dirs, span * SCENE_RADIUS + dist                          # t (B, D)

    def query_points(self, v_q, rays=None):
        """The points along the query pixels' rays: (B, rays * rays * depths, 3) in row, column,
        depth order, and their depths (B, D)."""
        pos, dirs, t = self.query_rays(v_q, rays)
        pts = pos[:, None, None] + dirs[:, :, None] * t[:, None, :, None]     # (B, R, D, 3)
        return pts.reshape(pos.shape[0], -1, 3), t

    @staticmethod
    def _grid(rays, v, M):
        """Where the points along the query rays (`query_rays`: per scene B) fall in each of the M
        context views v (B*M, 7): grid_sample's (B*M, P, 1, 2), P = rays x depths; a point behind a
        camera is sent outside its image."""
        # geometry: no parameters, and in float32 under bfloat16 autocast (its matrix product would
        # cast the points to bfloat16, a quarter of a pixel off at 64x64); the meta device
        # (bench.py's FLOP count) has no autocast to turn off
        device = v.device.type
        float32 = (torch.autocast(device, enabled=False) if torch.amp.is_autocast_available(device)
                   else nullcontext())
        with torch.no_grad(), float32:
            origin, dirs, t = (a.float().repeat_interleave(M, dim=0) for a in rays)
            grid, depth = project_rays(origin, dirs, t, v.float())
            grid[..., 0].masked_fill_(depth <= 1e-3, 2.0)                     # x = 2: off the image
        return grid.view(grid.shape[0], -1, 1, 2)

    def _nearest(self, seen, cos, vote):
        """The views' values seen (B, M, C, P) averaged with weights that favour views near the
        query camera (cos (B, M)) and views that the learned vote (B, M, P) says see the point
        -> (B, C, P)."""
        near = torch.softmax(self.sharpness * cos[:, :, None] + vote, dim=1)   # (B, M, P)
        return (seen * near[:, :, None]).sum(dim=1)

    @staticmethod
    def _composite(alpha, values):
        """Front-to-back alpha compositing along R rays of D points: opacities (B, R, D) and values
        (B, C, R, D) -> (B, C, R)."""
        clear = torch.cat((torch.ones_like(alpha[..., :1]), 1 - alpha[..., :-1]), -1)
        free = torch.cumprod(clear, -1)     # the light that reaches each point past those before
        return (values * (alpha * free)[:, None]).sum(dim=-1)

    @staticmethod
    def opacity(learned, carve):
        """A point's opacity from the learned logit and the carving logit, both (B, P): the sum."""
        return torch.sigmoid(learned + carve)

    def _carve(self, colours):
        """The opacity logit of space carving from the views' colours (B, M, x_dim, P) -> (B, P):
        solid where even the dimmest view sees something brighter than the black background."""
        return self.carve_gain * (colours.amax(dim=2).amin(dim=1) - self.carve_level)

    def _points(self, features):
        """The per-point MLP on channel-first features (B, C, P) -> (B, C', P)."""
        for layer in self.point:
            if isinstance(layer, nn.Linear):
                weight = layer.weight.expand(features.shape[0], -1, -1)
                features = torch.baddbmm(layer.bias[:, None], weight, features)
            else:
                features = layer(features)
        return features

    def forward(self, x, v, v_q):
        """x (B, M, 3, 64, 64), v (B, M, 7), v_q (B, 7) -> r (B, r_dim, 16, 16).

        Per point the tensors are channel-first, (B, [M,] C, P) with P = rays x rays x depths in
        row, column, depth order, as grid_sample gives them: the means over the views and the
        compositing along the rays then read contiguous memory, and the composited rays come out as
        the (B, C, rays, rays) maps the convolutions take."""
        B, M, x_dim = x.shape[:3]
        n, d = self.rays, self.depths
        with torch.no_grad():
            rays = self.query_rays(v_q)                     # pos, dirs (B, n * n, 3), t (B, D)
            # (B, M): views near the query
            cos = F.cosine_similarity(v[..., :3], v_q[:, None, :3], dim=-1)
        t = rays[2]
        P = n * n * d
        grid = self._grid(rays, v.flatten(0, 1), M)                         # (B*M, P, 1, 2)
        images = x.flatten(0, 1)
        # (B*M, 3, P, 1), at full size
        colours = F.grid_sample(images, grid.to(images.dtype), align_corners=False)
        feats = self.features(images)                                       # (B*M, C, 32, 32)
        # in float32: CPU autocast runs grid_sample so anyway; CUDA's would run it in bfloat16, and
        # the means and variances over the views below with it
        feats = F.grid_sample(feats.float(), grid, align_corners=False)
        # (B, M, C+3, P)
        seen = torch.cat((feats, colours.to(feats.dtype)), dim=1).view(B, M, -1, P)
        mean = seen.mean(dim=1)                                             # (B, C+3, P)
        var = (seen - mean[:, None]).pow(2).mean(dim=1)
        lowest = seen.amin(dim=1)
        vote = _weigh(self.vote_seen, seen) - _weigh(self.vote_mean, mean)[:, None]   # (B, M, P)
        nearest = self._nearest(seen, cos, vote)
        point = self._points(torch.cat((mean, var, lowest, nearest), dim=1))   # (B, hidden+1, P)
        learned = point[:, -1]                              # (B, P): the learned opacity logit
        carve = self._carve(seen[:, :, -x_dim:])
        alpha = self.opacity(learned, carve)
        rel_depth = (t - t.mean(dim=1, keepdim=True)) / SCENE_RADIUS        # (B, D) in [-1, 1]
        depth = rel_depth[:, None, None].expand(-1, 1, n * n, -1)           # (B, 1, rays, D)
        values = torch.cat((point[:, :-1].view(B, -1, n * n, d),          # (B, hidden + 5, rays, D)
                            nearest[:, -x_dim:].view(B, x_dim, n * n, d),
                            torch.ones_like(depth), depth), dim=1)
        ray = self._composite(alpha.view(B, n * n, d), values).view(B, -1, n, n)   # (B, out, n, n)
        direct = self.direct(ray, learned.view(B, n, n, d), x, v, v_q, cos)
        return torch.cat((self.out(ray), direct), dim=1)

    def direct(self, ray, learned, x, v, v_q, cos):
        """The rendered colour and opacity, to the grid as they are: (B, 4 * scale^2, 16, 16)."""
        return F.pixel_unshuffle(ray[:, -5:-1], self.scale)

    @classmethod
    def rendering(cls, r, x_dim=3, opacity=False):
        """The query view as this network renders it, read back from r: colour on black,
        (B, 3, 32, 32) (64x64 for GeometricFine); with opacity, its opacity as a fourth channel."""
        rendered = F.pixel_shuffle(r[:, -cls.scale ** 2 * (x_dim + 1):], cls.scale)
        return rendered[:, :x_dim + bool(opacity)]


class GeometricFine(Geometric):
    """Geometric, with its rendering of the query view made at the image's full resolution (64x64);
    not the paper's.

    Geometric renders 32x32 rays, so each ray's colour covers 2x2 pixels and a cube's edge is
    blurred over two of them. Here a second pass follows one ray per pixel, 64x64 x `depths` points,
    and only reads the context views' colours there (no CNN features, no per-point MLP: the pass
    costs grid samples, not convolutions). Each point's opacity combines the carving at that point
    with the learned logit of the 32x32 pass, interpolated to the pixel, as a product (`opacity`;
    both passes); its colour is the views' near-weighted colour, with the same learned vote.
    Composited, the 64x64 colour and opacity reach the 16x16 grid 4x4 pixels per cell (64 channels
    of r; the 32x32 pass's features make the rest), so the cores see the scene's colours at the
    resolution they must draw them, and `rendering(r)` is 64x64.
    """

    scale = 4

    @staticmethod
    def opacity(learned, carve):
        """Carving's opacity times a learned factor that starts near 1 (sigmoid(3) = 0.95): inside
        the carved hull, where carving's logit is large, a sum's sigmoid would pass no gradient to
        the learned logit, and the hull's excess could never be cut away; a product can cut it."""
        return torch.sigmoid(carve) * torch.sigmoid(learned + 3)

    def direct(self, ray, learned, x, v, v_q, cos):
        B, x_dim, size, d = x.shape[0], x.shape[2], x.shape[-1], self.depths
        colours, alpha = self.pixel_points(learned, x, v, v_q)
        nearest = self._nearest(colours, cos, _weigh(self.vote_seen[-x_dim:], colours))  # (B, 3, P)
        values = torch.cat((nearest, torch.ones_like(nearest[:, :1])), dim=1)
        values = values.view(B, x_dim + 1, size * size, d)
        image = self._composite(alpha.view(B, size * size, d), values.to(alpha.dtype))
        return F.pixel_unshuffle(image.view(B, x_dim + 1, size, size), self.scale)

    def pixel_points(self, learned, x, v, v_q):
        """The points of the pass's pixel rays (P = size * size * depths, in row, column, depth
        order): each context view's colour there (B, M, 3, P) and their opacity (B, P), from the
        32x32 pass's learned opacity logits (B, rays, rays, D)."""
        B, M, x_dim, size = x.shape[0], x.shape[1], x.shape[2], x.shape[-1]
        grid_size = self.rays // 2
        if size != grid_size * self.scale:
            side = grid_size * self.scale
            raise ValueError(f"GeometricFine renders {side}x{side} images, not {size}x{size}")
        with torch.no_grad():
            rays = self.query_rays(v_q, size)                              # one per pixel
        images = x.flatten(0, 1)
        grid = self._grid(rays, v.flatten(0, 1), M)                   # (B*M, size * size * D, 1, 2)
        colours = F.grid_sample(images, grid.to(images.dtype), align_corners=False)
        colours = colours.view(B, M, x_dim, -1)                                     # (B, M, 3, P)
        learned = F.interpolate(learned.permute(0, 3, 1, 2), size=size, mode="bilinear",
                                align_corners=False)
        alpha = self.opacity(learned.permute(0, 2, 3, 1).reshape(B, -1), self._carve(colours))
        return colours, alpha


# The room is the built-in rooms' (dataset/rooms.py, made like DeepMind's rooms_*): a square reaching
# ROOM_HALF from its centre along x and y, walls WALL_HEIGHT high on a floor at z = 0, the sky over
# them (world units)
SKY_DEPTH = 100.0       # the depth of a ray that leaves over the walls: far enough to be a direction only
NEAR, FAR = 0.3, 12.0   # the depths sampled along a query ray: from NEAR to where it leaves (FAR for the sky)
ARM_REACH = 1.1         # jaco: the arm and the target lie within this of the point the cameras look at
WALLS, FLOOR, SKY = 4, 4, 5     # room_exit's surfaces: 0-3 the walls at -x, +x, -y, +y, then floor and sky


def room_exit(origin, dirs):
    """Where rays from cameras inside the room leave it: origin (N, 3), dirs (N, R, 3) -> depth
    t (N, R) (SKY_DEPTH where a ray passes over the walls) and the surface it meets (N, R), one of
    0-3 (the walls at -x, +x, -y, +y), FLOOR or SKY."""
    o, inf = origin[:, None], torch.full_like(dirs[..., 0], math.inf)
    hits = []
    for axis, side in ((0, -1), (0, 1), (1, -1), (1, 1)):
        t = (side * ROOM_HALF - o[..., axis]) / dirs[..., axis]
        hits.append(torch.where(t > 0, t, inf))
    t = -o[..., 2] / dirs[..., 2]
    hits.append(torch.where(t > 0, t, inf))
    t, surface = torch.stack(hits, dim=-1).min(dim=-1)
    sky = o[..., 2] + t * dirs[..., 2] > WALL_HEIGHT
    return t.masked_fill(sky, SKY_DEPTH), surface.masked_fill(sky, SKY)


def exit_points(origin, dirs, t):
    """The points where rays (origin (N, 3), dirs (N, R, 3)) leave the backdrop at depths t (N, R) ->
    (N, R, 3); the sky's, at most FAR away."""
    return origin[:, None] + dirs * t.clamp(max=FAR)[..., None]


def surface_colours(images, surface, surfaces, alike=0):
    """The median colour of each of a backdrop's surfaces in a scene's views: images (B, M, 3, P),
    surface (B, M, P) (the surface each pixel's ray meets) -> (B, surfaces, 3). Surfaces 0 to
    alike - 1 look alike (a room's walls): one that no view shows takes the median of those shown;
    any other surface that no view shows, 0."""
    pixels = images.transpose(1, 2).flatten(2)                              # (B, 3, M * P)
    surface = surface.flatten(1)[:, None]
    medians = [pixels.masked_fill(chosen, math.nan).nanmedian(dim=-1).values   # (B, 3) each
               for chosen in [surface != k for k in range(surfaces)] + [surface >= alike]]
    shared = medians.pop()
    medians = [torch.where(m.isnan() & (k < alike), shared, m) for k, m in enumerate(medians)]
    return torch.stack(medians, dim=1).nan_to_num(0.0)


class RoomLight(nn.Module):
    """The room's lighting, fitted to each scene's context views: the colour its walls and floor have
    where no context view sees them, and the room colour a context pixel is tested against. The walls
    share one colour (albedo), the floor has another, and both are lit by a point light above the
    room: a point p with normal n shows
        albedo * (ambient + max(n . l, 0) / (1 + (|L - p| / falloff)^2)),   l the unit vector to L.
    For each scene, the light L is the one of a grid of candidates above the room whose shading, with the
    albedos fitted by least squares, best explains the context views' room pixels (those not saturated
    and not foreground). ambient and falloff are learnt. Its entry points (forward, colour) compute in
    float32 under autocast too: the fit's residual and the squared distances are differences of large
    sums, which cancel in bfloat16."""

    def __init__(self, normals, groups, candidates=7, heights=(1.35, 1.95), ambient=0.3, falloff=4.0,
                 stride=2):
        super().__init__()
        self.register_buffer("normals", torch.as_tensor(normals, dtype=torch.float32), persistent=False)
        self.register_buffer("groups", torch.as_tensor(groups), persistent=False)   # -1: no albedo
        self.albedos = int(self.groups.max()) + 1
        across = torch.linspace(-1, 1, candidates) * (ROOM_HALF - 0.5)
        grid = torch.meshgrid(across, across, WALL_HEIGHT + torch.tensor(heights), indexing="ij")
        self.register_buffer("candidates", torch.stack(grid, dim=-1).view(-1, 3), persistent=False)
        self.log_ambient = nn.Parameter(torch.tensor(math.log(ambient)))
        self.log_falloff = nn.Parameter(torch.tensor(math.log(falloff)))
        self.stride = stride   # the context pixels the fit reads: every stride-th row and column

    def shading(self, lights, points, surface):
        """How much light reaches points (B, P, 3) on surfaces (B, P) from lights (K, B, 3) -> (K, B, P)."""
        # |L - p|^2 and n . (L - p) from dot products: no (K, B, P, 3) tensor of the vectors L - p
        n = self.normals[surface]
        square = ((lights ** 2).sum(dim=-1)[..., None] + (points ** 2).sum(dim=-1)
                  - 2 * torch.einsum("kbc,bpc->kbp", lights, points)).clamp_min(1e-6)
        facing = torch.einsum("kbc,bpc->kbp", lights, n) - (n * points).sum(dim=-1)
        lambert = (facing * square.rsqrt()).clamp(min=0)
        return self.log_ambient.exp() + lambert / (1 + square / self.log_falloff.exp() ** 2)

    def _fit(self, shading, colours, weights):
        """Least-squares albedos for shadings (K, B, P) of colours (B, P, 3) weighted by (G, B, P, 3) ->
        albedos (K, B, G, 3) and the weighted squared error left (K, B)."""
        wc = weights * colours
        cross = torch.einsum("kbp,gbpc->kbgc", shading, wc)
        square = torch.einsum("kbp,gbpc->kbgc", shading ** 2, weights).clamp_min(1e-6)
        albedo = cross / square
        left = (wc * colours).sum(dim=(0, 2, 3)) - (cross ** 2 / square).sum(dim=(2, 3))
        return albedo, left

    def forward(self, colours, points, surface, room, light=None):
        """Fit a scene's light: its context views' colours (B, M, 3, S, S), the points of the room their
        rays meet (B, M, S, S, 3) and the surfaces there (B, M, S, S), and how likely each pixel shows the
        room (B, M, S, S) -> the light (B, 3) and the albedos (B, groups, 3). A light (B, 3) already
        chosen is kept: only the albedos are fitted, to these room pixels."""
        with torch.autocast(colours.device.type, enabled=False):
            return self._fit_scene(colours.float(), points.float(), surface, room, light)

    def _fit_scene(self, colours, points, surface, room, light):
        s = self.stride
        colours = colours[..., ::s, ::s].permute(0, 1, 3, 4, 2).flatten(1, 3)            # (B, P, 3)
        points, surface = points[:, :, ::s, ::s].flatten(1, 3), surface[:, :, ::s, ::s].flatten(1)
        room = room[:, :, ::s, ::s].flatten(1)
        group = self.groups[surface]
        weights = torch.stack([(group == g) & (room > 0.5) for g in range(self.albedos)])   # (G, B, P)
        weights = (weights[..., None] & (colours < 0.995)).to(colours.dtype)             # (G, B, P, 3)
        if light is None:
            with torch.no_grad():
                K, B = self.candidates.shape[0], colours.shape[0]
                lights = self.candidates[:, None].expand(K, B, 3)
                _, left = self._fit(self.shading(lights, points, surface), colours, weights)
                light = self.candidates[left.argmin(dim=0)]                               # (B, 3)
        albedo, _ = self._fit(self.shading(light[None], points, surface), colours, weights)
        return light, albedo[0]

    def colour(self, light, albedo, points, surface):
        """The lit colour (B, 3, P) of room points (B, P, 3) on surfaces (B, P); 0 where no albedo."""
        group = self.groups[surface]
        scene = torch.arange(points.shape[0], device=points.device)[:, None]
        base = albedo[scene, group.clamp(min=0)] * (group >= 0)[..., None]               # (B, P, 3)
        with torch.autocast(points.device.type, enabled=False):
            shading = self.shading(light[None].float(), points.float(), surface)[0, ..., None]
            return (base.float() * shading).clamp(0, 1).transpose(1, 2)


# room_exit's surfaces: their inward normals and their albedos (the walls share one; the sky has none)
ROOM_NORMALS = ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, 0))
ROOM_ALBEDOS = (0, 0, 0, 0, 1, -1)


class GeometricRooms(nn.Module):
    """A query-conditioned representation for cameras inside a room (the built-in rooms and
    DeepMind's rooms_*); not the paper's.

    The room's box is known (ROOM_HALF, WALL_HEIGHT): every pixel's ray leaves it at a wall, the
    floor or the sky, at a depth found by geometry. What stands in front of that is an object. So:
    1. Each context view's pixels get a logit of showing an object (foreground) rather than the
       room: at first, how far the pixel's colour lies from the colour the room has there (RoomLight's
       lit wall or floor, fitted to the pixels near their surface's median colour; the sky's median),
       corrected by a small CNN that also sees whether the other views, looking at the same point of
       the room, agree with the pixel (they do where it shows the room).
    2. Along each of the query view's 64x64 rays, `depths` points from NEAR to where the ray leaves
       the room are projected into every context view. A point is solid where every view that sees
       it shows foreground there (space carving, with foreground in place of Shepard-Metzler's
       bright-on-black) and the views' colours there agree (photo-consistency: it keeps an object
       seen by two views from being made of two other objects); it takes the colour of the views
       that show foreground there. Front-to-back compositing keeps the first solid point.
    3. Behind it, the room where the ray leaves it: the colour of the views that see that point of
       the wall or floor as room, or, where none does, its colour under the room's fitted light.
    The 64x64 rendering and its confidence reach the cores' 16x16 grid 4x4 pixels per cell (64
    channels of r), and a small CNN on it makes the rest of r; the generator, z and the ELBO are the
    paper's, and the render_gate head (RenderGate) shows the rendering where it judges it right.
    """

    query_conditioned = True
    on_grid = True
    scale = 4   # the rendering's pixels per grid cell along each side: 64x64 on the 16x16 grid
    # the backdrop: where rays leave it, its surfaces and how many of them look alike (the walls)
    backdrop = staticmethod(room_exit)
    surfaces, alike = SKY + 1, WALLS
    # the backdrop's surfaces' inward normals and albedos, for RoomLight (None: no lighting model)
    normals, albedo_groups = ROOM_NORMALS, ROOM_ALBEDOS
    agree_start = 0.1   # the largest colour difference of a point's views that keeps it, at first

    def __init__(self, x_dim=3, v_dim=7, r_dim=256, hidden=16, depths=32):
        super().__init__()
        direct = self.scale ** 2 * (x_dim + 1)        # rendered colour and confidence, per grid cell
        if r_dim <= direct:
            raise ValueError(f"{type(self).__name__} needs r_dim > {direct}, not {r_dim}")
        self.depths = depths
        # foreground logit: gain * (distance from the surface's median - level) + the CNN's correction
        self.fg_gain = nn.Parameter(torch.tensor(40.0))
        self.fg_level = nn.Parameter(torch.tensor(0.16))
        self.fg_net = nn.Sequential(        # in: colour, its distance from the median, the views' check
            nn.Conv2d(x_dim + 3, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, 1, 3, padding=1))
        nn.init.zeros_(self.fg_net[-1].weight)
        nn.init.zeros_(self.fg_net[-1].bias)
        # photo-consistency: a point is kept where its views' colours differ by less than agree_level
        self.agree_gain = nn.Parameter(torch.tensor(40.0))
        self.agree_level = nn.Parameter(torch.tensor(self.agree_start))
        self.out = nn.Sequential(                           # the 64x64 rendering -> the 16x16 grid
            nn.Conv2d(x_dim + 1, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, r_dim - direct, 3, padding=1))
        self.light = None if self.normals is None else RoomLight(self.normals, self.albedo_groups)

    @staticmethod
    def depth_range(pos, dirs, exit_t):
        """The first and last depths sampled along rays (pos (B, 3), dirs (B, R, 3)) that leave the
        backdrop at exit_t (B, R): from NEAR to where they leave it, FAR for the sky; each (B, R)."""
        return torch.full_like(exit_t, NEAR), exit_t.clamp(max=FAR)

    def foreground(self, x, v):
        """Each context view's per-pixel foreground probability: x (B, M, 3, S, S), v (B, M, 7) ->
        (B, M, 1, S, S), the median colour of each of the backdrop's surfaces (B, surfaces, 3), where
        each pixel's ray leaves the backdrop: the point (B, M, S, S, 3) and its surface (B, M, S, S), and
        the room's light that RoomLight chose (B, 3; None without a lighting model)."""
        B, M, x_dim, S = x.shape[0], x.shape[1], x.shape[2], x.shape[-1]
        with torch.no_grad():
            pos, dirs = pixel_rays(v.flatten(0, 1).float(), S)
            t, surface = self.backdrop(pos, dirs)                   # (B*M, S*S)
            pixels = x.flatten(3)                                   # (B, M, 3, S*S)
            medians = surface_colours(pixels, surface.view(B, M, -1), self.surfaces, self.alike)
            scene = torch.arange(B, device=x.device)
            expected = medians[scene[:, None, None], surface.view(B, M, -1)]            # (B, M, P, 3)
            distance = (pixels - expected.transpose(2, 3)).abs().mean(dim=2)            # (B, M, P)
            points = exit_points(pos, dirs, t).view(B, M, -1, 3)
            light = None
            if self.light is not None:
                # the lit colour of the room at each pixel, the light fitted to the pixels near the
                # median, in place of the median where the lighting model covers the surface
                room = (distance < self.fg_level).view(B, M, S, S).to(x.dtype)
                light, albedo = self.light(x, points.view(B, M, S, S, 3), surface.view(B, M, S, S), room)
                lit = self.light.colour(light, albedo, points.flatten(1, 2), surface.view(B, -1))
                covered = (self.light.groups[surface.view(B, -1)] >= 0)[:, None]
                expected = torch.where(covered, lit, expected.flatten(1, 2).transpose(1, 2))
                expected = expected.view(B, x_dim, M, -1).transpose(1, 2)                # (B, M, 3, P)
                distance = (pixels - expected).abs().mean(dim=2)
            # the other views at the point of the room each pixel's ray meets: their least difference
            # from the pixel's colour, and whether any sees it
            check = torch.full_like(distance, math.inf)
            for k in range(M):
                colours, seen = _look(x[:, k], v[:, k], points.flatten(1, 2))          # (B, 3, M*P)
                differ = (colours.view(B, x_dim, M, -1).transpose(1, 2) - pixels).abs().mean(dim=2)
                seen = seen.view(B, M, -1)
                seen[:, k] = False
                check = torch.where(seen, torch.minimum(check, differ), check)
            seen = check.isfinite()
            maps = torch.stack((distance, check.nan_to_num(0.0, posinf=0.0), seen.float()), dim=2)
        maps = maps.view(B * M, 3, S, S)
        logit = (self.fg_gain * (maps[:, :1] - self.fg_level)
                 + self.fg_net(torch.cat((x.flatten(0, 1), maps.to(x.dtype)), dim=1)))
        return (torch.sigmoid(logit).view(B, M, 1, S, S), medians, points.view(B, M, S, S, 3),
                surface.view(B, M, S, S), light)

    def forward(self, x, v, v_q):
        """x (B, M, 3, 64, 64), v (B, M, 7), v_q (B, 7) -> r (B, r_dim, 16, 16)."""
        B, M, x_dim, S = x.shape[0], x.shape[1], x.shape[2], x.shape[-1]
        if S != 16 * self.scale:
            raise ValueError(f"{type(self).__name__} renders {16 * self.scale}x{16 * self.scale} images, "
                             f"not {S}x{S}")
        fg, medians, room_points, room_surface, light = self.foreground(x, v)
        with torch.no_grad():
            pos, dirs = pixel_rays(v_q.float(), S)                             # (B, R, 3), R = S*S
            exit_t, surface = self.backdrop(pos, dirs)
            near, far = self.depth_range(pos, dirs, exit_t)
            steps = torch.arange(self.depths, device=x.device, dtype=pos.dtype) / self.depths
            t = near[..., None] + (far - near)[..., None] * steps              # (B, R, D)
            grid = Geometric._grid((pos, dirs, t), v.flatten(0, 1), M)     # (B*M, R*D, 1, 2)
            seen = (grid.abs() <= 1).all(dim=-1).view(B, M, -1).to(x.dtype)   # (B, M, P)
            exit_grid = Geometric._grid((pos, dirs, exit_t[..., None]), v.flatten(0, 1), M)
            exit_seen = (exit_grid.abs() <= 1).all(dim=-1).view(B, M, -1).to(x.dtype)
            # the context views' colours at the points (no parameters: no gradient), and how far
            # the views that see a point disagree on its colour (the largest difference of a pair)
            images = x.flatten(0, 1)
            colours = F.grid_sample(images, grid.to(x.dtype), align_corners=False).view(B, M, x_dim, -1)
            worst = torch.zeros_like(colours[:, 0, 0])
            for i in range(M):
                for j in range(i + 1, M):
                    differ = (colours[:, i] - colours[:, j]).abs().mean(dim=1)
                    worst = torch.maximum(worst, seen[:, i] * seen[:, j] * differ)
            at_exit = F.grid_sample(images, exit_grid.to(x.dtype), align_corners=False).view(B, M, x_dim, -1)
        fg_maps = fg.flatten(0, 1)
        shows = F.grid_sample(fg_maps, grid.to(fg.dtype), align_corners=False).view(B, M, -1) * seen
        # carving: every view that sees the point shows foreground there; two views at least
        carved = torch.where(seen > 0, shows, torch.ones_like(shows)).amin(dim=1)
        carved = carved * (seen.sum(dim=1) >= 2)
        alpha = carved * torch.sigmoid(self.agree_gain * (self.agree_level - worst))      # (B, P)
        weight = shows[:, :, None]
        colour = (colours * weight).sum(dim=1) / weight.sum(dim=1).clamp_min(1e-6)       # (B, 3, P)
        R, D = S * S, self.depths
        values = torch.cat((colour, torch.ones_like(colour[:, :1])), dim=1).view(B, x_dim + 1, R, D)
        drawn = Geometric._composite(alpha.view(B, R, D), values)            # (B, 4, R): colour, cover
        # the room behind: seen as room by some view, else lit by the scene's light (RoomLight) or, on a
        # surface it does not model, that surface's median colour
        exit_fg = F.grid_sample(fg_maps, exit_grid.to(fg.dtype), align_corners=False).view(B, M, R)
        room = exit_seen * (1 - exit_fg)                                               # (B, M, R)
        unseen = medians[torch.arange(B, device=x.device)[:, None], surface].transpose(1, 2)   # (B, 3, R)
        if self.light is not None:
            # the light the foreground test chose; the albedos refitted to the pixels it calls room
            light, albedo = self.light(x, room_points, room_surface, 1 - fg[:, :, 0].detach(), light)
            lit = self.light.colour(light, albedo, exit_points(pos, dirs, exit_t), surface).to(unseen.dtype)
            unseen = torch.where((self.light.groups[surface] >= 0)[:, None], lit, unseen)
        known = room.sum(dim=1)[:, None]
        behind = ((at_exit * room[:, :, None]).sum(dim=1) + 0.1 * unseen) / (known + 0.1)
        cover = drawn[:, x_dim:]
        image = drawn[:, :x_dim] + (1 - cover) * behind
        confidence = cover + (1 - cover) * known.clamp(max=1)
        rendering = torch.cat((image, confidence), dim=1).view(B, x_dim + 1, S, S)
        direct = F.pixel_unshuffle(rendering, self.scale)
        return torch.cat((self.out(rendering), direct), dim=1)

    # what the render gate shows, read back from r as Geometric's is: the 64x64 rendering (the room
    # included), with its confidence as the fourth channel
    rendering = classmethod(Geometric.rendering.__func__)


def floor_exit(origin, dirs):
    """Where rays from cameras above jaco's floor (dataset/jaco.py: a square at z = 0 reaching
    FLOOR_HALF from the arm's base, the sky beyond) leave the scene: origin (N, 3), dirs (N, R, 3) ->
    depth t (N, R) (SKY_DEPTH for the sky) and the surface (N, R): 0 the floor, 1 the sky."""
    o = origin[:, None]
    t = -o[..., 2] / dirs[..., 2]
    where = o + t[..., None] * dirs
    floor = (t > 0) & (where[..., :2].abs() <= jaco.FLOOR_HALF).all(dim=-1)
    return torch.where(floor, t, torch.full_like(t, SKY_DEPTH)), (~floor).long()


class GeometricJaco(GeometricRooms):
    """GeometricRooms for jaco's scenes (dataset/jaco.py: the arm and its target on a floor under
    the sky, seen from cameras around them); not the paper's. The backdrop is the floor and the sky;
    the points sampled along each ray span the ball of radius ARM_REACH about the point the cameras
    look at (jaco.LOOK_AT), where the arm and the target are, in place of a room's whole depth; and a
    point's views may differ more in colour before it is dropped (agree_start)."""

    backdrop = staticmethod(floor_exit)
    surfaces, alike = 2, 0
    normals = None
    # the arm's metal is shaded unlike from view to view; one arm and one target make few false objects
    agree_start = 0.3

    @staticmethod
    def depth_range(pos, dirs, exit_t):
        centre = torch.tensor(jaco.LOOK_AT, device=pos.device, dtype=pos.dtype)
        length = dirs.norm(dim=-1)                                            # (B, R)
        closest = ((centre - pos)[:, None] * dirs).sum(dim=-1) / length ** 2  # (B, R)
        half = ARM_REACH / length
        return (closest - half).clamp(min=NEAR), torch.minimum(closest + half, exit_t.clamp(max=FAR))


def _look(image, v, points):
    """What cameras v (N, 7) see at world points (N, P, 3) in their images (N, C, S, S): the values
    there (N, C, P) and whether the point is in the view, in front of the camera (N, P)."""
    grid, depth = project(points, v)
    seen = (depth > 1e-3) & (grid.abs() <= 1).all(dim=-1)
    return F.grid_sample(image, grid[:, :, None].to(image.dtype), align_corners=False)[..., 0], seen


class RenderGate(nn.Conv2d):
    """An observation head (not the paper's): the paper's eta_g(u_L), a 1x1 conv, mixed pixel by
    pixel with the representation's own rendering of the query view through a learned gate that
    decides, from u_L and that rendering, where to show it. The gate starts nearly closed
    (sigmoid(-3) = 0.05), so a model starts as the paper's. Needs a representation that renders the
    query view (`rendering`)."""

    def __init__(self, h_dim, x_dim, phi, hidden=16):
        super().__init__(h_dim, x_dim, kernel_size=1)      # eta_g, named and shaped as the paper's
        if not hasattr(phi, "rendering"):
            name = type(phi).__name__.lower()
            raise ValueError(f"the render_gate observation needs a representation that renders the "
                             f"query view (geometric or geometric_fine), not {name}")
        self.rendering = type(phi).rendering
        self.gate = nn.Sequential(nn.Conv2d(h_dim + x_dim + 1, hidden, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(hidden, 1, 1))
        nn.init.zeros_(self.gate[-1].weight)
        nn.init.constant_(self.gate[-1].bias, -3.0)

    def forward(self, u, r):
        """u_L (B, h_dim, H, W), r -> the image's mean (B, x_dim, H, W)."""
        x_mu = super().forward(u)
        rendered = self.rendering(r, opacity=True).to(x_mu.dtype)
        shown = F.interpolate(rendered, size=x_mu.shape[-2:], mode="bilinear",
                              align_corners=False)                    # (B, 3 + opacity, H, W)
        gate = torch.sigmoid(self.gate(torch.cat((u, shown), dim=1)))
        return x_mu + gate * (shown[:, :-1] - x_mu)


REPRESENTATIONS = {"geometric": Geometric, "geometric_fine": GeometricFine, "geometric_rooms": GeometricRooms,
                   "geometric_jaco": GeometricJaco}
OBSERVATION_HEADS = {"render_gate": RenderGate}
