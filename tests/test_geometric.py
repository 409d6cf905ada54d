"""The geometric representation's camera model: it must agree with the renderer, or every ray reads the
wrong pixels and the model learns nothing from the cameras (representation.py, Geometric)."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from dataset import shepard_metzler as sm
from dataset.viewpoints import raw_to_viewpoint
from metrics import object_iou
from model import GQN
from geometric import Geometric, GeometricFine, project


def viewpoints(positions):
    return torch.from_numpy(raw_to_viewpoint(sm.camera_from_position(positions))).float()


def test_projection_matches_the_renderer():
    centres, _, positions = sm.random_scene(seed=3, split="train", index=7, parts=5)
    cols, rows, depth = sm.project_points(centres, positions)                     # (V, P) each
    v = viewpoints(positions)
    pts = torch.from_numpy(centres).float()[None].expand(len(v), -1, -1)
    grid, d = project(pts, v)
    np.testing.assert_allclose((grid[..., 0].numpy() + 1) * 32, cols, atol=1e-3)
    np.testing.assert_allclose((grid[..., 1].numpy() + 1) * 32, rows, atol=1e-3)
    np.testing.assert_allclose(d.numpy(), depth, atol=1e-4)


def test_the_rays_land_where_their_points_project_and_points_behind_a_camera_fall_off_its_image():
    """The representations project each query ray once per context camera (its points' image coordinates
    follow from the ray's); every point must land where projecting it on its own puts it, and a point
    behind a camera must read nothing from that camera's image."""
    _, _, positions = sm.random_scene(seed=2, split="train", index=3, parts=5)
    v = viewpoints(positions[:4])
    g = Geometric(r_dim=24, rays=8, depths=5)
    v_q, context = v[:1], v[1:].clone()
    # cameras inside the scene: some points lie behind them
    context[:, :3] *= 0.2
    grid = Geometric._grid(g.query_rays(v_q), context, 3)[:, :, 0]               # (3, P, 2)
    pts, _ = g.query_points(v_q)
    expected, depth = project(pts.expand(3, -1, -1), context)
    behind = depth <= 1e-3
    assert behind.any() and (~behind).any()
    np.testing.assert_allclose(grid[~behind].numpy(), expected[~behind].numpy(), rtol=1e-4, atol=1e-5)
    assert (grid[..., 0][behind] > 1).all()


def test_under_bfloat16_autocast_the_rays_still_land_on_their_pixels():
    """--dtype bfloat16: the cameras' matrix product would run in bfloat16 and misplace every ray's
    samples by a fraction of a pixel; the geometry stays in float32."""
    _, _, positions = sm.random_scene(seed=0, split="test", index=1, parts=5)
    v = viewpoints(positions[:4])
    g = Geometric(r_dim=24)
    rays = g.query_rays(v[:1])
    exact = Geometric._grid(rays, v[1:], 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        grid = Geometric._grid(rays, v[1:], 3)
    assert grid.dtype == torch.float32 and torch.equal(grid, exact)


@pytest.mark.parametrize("cls", [Geometric, GeometricFine])
def test_the_representation_runs_on_the_meta_device_as_benchs_flop_count_does(cls):
    """bench.py counts FLOPs on the meta device, which has no autocast to turn off: the float32 guard of
    the projection broke every geometric benchmark."""
    with torch.device("meta"):
        g = cls(r_dim=96)
        r = g(torch.rand(2, 3, 3, 64, 64), torch.randn(2, 3, 7), torch.randn(2, 7))
    assert r.shape == (2, 96, 16, 16)


def test_query_rays_pass_through_their_pixel_centres():
    _, _, positions = sm.random_scene(seed=0, split="test", index=1, parts=5)
    v = viewpoints(positions[:2])
    g = Geometric(r_dim=24, rays=8, depths=5)
    pts, _ = g.query_points(v)                                                    # (2, 8 * 8 * 5, 3)
    grid, depth = project(pts, v)
    centres = (torch.arange(8) + 0.5) / 4 - 1
    # (row, col, D)
    expected = torch.stack(torch.broadcast_tensors(centres[None, :, None], centres[:, None, None]), -1)
    np.testing.assert_allclose(grid.view(2, 8, 8, 5, 2).numpy(), expected.expand(2, 8, 8, 5, 2).numpy(),
                               atol=1e-5)
    assert (depth > 0).all()


def rendered(centres, colours, positions):
    """The built-in renderer's views of a scene as the model takes them: (V, 3, 64, 64) floats in [0, 1]."""
    return torch.from_numpy(sm.render_views(centres, colours, positions)).permute(0, 3, 1, 2).float() / 255


def test_views_carve_the_query_views_silhouette():
    """Space carving with the module's rays and projection: with the query view among the views, the
    carved object seen from the query camera is the query view's own silhouette."""
    centres, colours, positions = sm.random_scene(seed=1, split="test", index=4, parts=5)
    images = rendered(centres, colours, positions[:4])
    v = viewpoints(positions[:4])
    g = Geometric(r_dim=24, rays=64, depths=64)
    pts, _ = g.query_points(v[3:4])
    grid, _ = project(pts.expand(4, -1, -1), v)
    seen = F.grid_sample(images, grid[:, :, None], align_corners=False)[..., 0]    # (4, 3, P)
    solid = (seen.amax(1) > 0.1).all(0).view(64, 64, 64).float()                  # (row, col, depth)
    silhouette = solid.amax(-1)[None, None].expand(1, 3, 64, 64)
    assert object_iou(silhouette, images[3:4]).item() > 0.98


def test_a_geometric_gqn_renders_for_the_query_camera():
    torch.manual_seed(0)
    model = GQN(representation="geometric", L=2, shared_core=True, upsample="broadcast", r_dim=24, h_dim=8)
    _, _, positions = sm.random_scene(seed=0, split="train", index=0, parts=5)
    v = viewpoints(positions[:5])[None]
    x = torch.rand(1, 4, 3, 64, 64)
    r1 = model.encode(x, v[:, :4], v[:, 4])
    r2 = model.encode(x, v[:, :4], v[:, 0])
    assert r1.shape == (1, 24, 16, 16)
    # r depends on the query camera
    assert not torch.allclose(r1, r2)
    elbo = model(x, v[:, :4], v[:, 4], x[:, 0], 0.5)
    elbo.sum().backward()
    assert torch.isfinite(elbo).all()
    # every weight learns: a gradient that is not zero (vote_mean's term is common to every view and cancels
    # in the softmax, so its gradient is zero up to rounding)
    learned = {name: p.grad.abs().sum().item() for name,
               p in model.phi.named_parameters() if name != "vote_mean"}
    assert all(g > 0 for g in learned.values()), [name for name, g in learned.items() if not g > 0]


def test_the_rendering_read_back_from_r_is_the_carved_query_view():
    """Geometric.rendering(r) (what the render gate shows) is the composited colour:
    at initialisation, with the query view among the context views, the view's own object in place."""
    torch.manual_seed(0)
    centres, colours, positions = sm.random_scene(seed=1, split="test", index=4, parts=5)
    images = rendered(centres, colours, positions[:4])
    v = viewpoints(positions[:4])
    g = Geometric(r_dim=24)
    with torch.no_grad():
        image = Geometric.rendering(g(images[None], v[None], v[3:4]))                # (1, 3, 32, 32)
    image = F.interpolate(image, size=64, mode="bilinear", align_corners=False)
    assert object_iou(image, images[3:4]).item() > 0.85
    assert (image - images[3:4]).abs().mean().item() < 0.03                       # and in its colours


def test_the_fine_rendering_is_the_query_view_at_full_resolution():
    """GeometricFine renders one ray per pixel: the same carved view as Geometric's, without its 2x2 blur,
    so its silhouette and colours are closer to the truth's than Geometric's, brought up to 64x64."""
    torch.manual_seed(0)
    centres, colours, positions = sm.random_scene(seed=1, split="test", index=4, parts=5)
    images = rendered(centres, colours, positions[:4])
    v = viewpoints(positions[:4])
    with torch.no_grad():
        fine = GeometricFine(r_dim=72)(images[None], v[None], v[3:4])
        coarse = Geometric(r_dim=72)(images[None], v[None], v[3:4])
    assert fine.shape == (1, 72, 16, 16)
    image = GeometricFine.rendering(fine)                                         # (1, 3, 64, 64)
    blurred = F.interpolate(Geometric.rendering(coarse), size=64, mode="bilinear", align_corners=False)
    truth = images[3:4]
    assert image.shape == truth.shape
    assert object_iou(image, truth).item() > 0.95 > object_iou(blurred, truth).item()
    assert (image - truth).abs().mean().item() < 0.5 * (blurred - truth).abs().mean().item()
    # the render gate, wide open, shows it as it is, with no resampling
    model = GQN(representation="geometric_fine", L=1, shared_core=True, upsample="broadcast", r_dim=72,
                h_dim=8, observation="render_gate")
    u = torch.zeros(1, 8, 64, 64)
    with torch.no_grad():
        model.eta_g.gate[-1].bias.fill_(30.0)
        r = model.encode(images[None, :3], v[None, :3], v[3:4])
        shown = model.observe(u, r)
    assert torch.allclose(shown, GeometricFine.rendering(r), atol=1e-5)


SMALL_GEOMETRIC = dict(representation="geometric", L=2, shared_core=True, upsample="broadcast", r_dim=24,
                       h_dim=8)


def output_stage_inputs():
    """Seeded inputs for the image stage of SMALL_GEOMETRIC: 4 random context views and a query camera of a
    built-in scene's (x (1, 4, 3, 64, 64), v (1, 5, 7)), and a random canvas u (1, 8, 64, 64)."""
    torch.manual_seed(0)
    _, _, positions = sm.random_scene(seed=0, split="train", index=0, parts=5)
    return torch.rand(1, 4, 3, 64, 64), viewpoints(positions[:5])[None], torch.randn(1, 8, 64, 64)


def test_render_gate_shows_the_rendering_where_it_opens_and_starts_nearly_closed():
    """--render_gate mixes, per pixel, the generator's eta_g(u) with the representation's own rendering: at
    initialisation 5 % of the rendering (the model starts as the paper's), fully open exactly the rendering;
    the gate learns from the loss, and the model rebuilds from its config."""
    x, v, u = output_stage_inputs()
    gated = GQN(**SMALL_GEOMETRIC, observation="render_gate")
    assert GQN(**gated.config).config["observation"] == "render_gate"
    assert GQN(**SMALL_GEOMETRIC).config["observation"] == "eta_g"
    plain = GQN(**SMALL_GEOMETRIC)
    # eta_g is the paper's 1x1 conv
    plain.load_state_dict(gated.state_dict(), strict=False)
    with torch.no_grad():
        r = gated.encode(x, v[:, :4], v[:, 4])
        own, mixed = plain.observe(u, r), gated.observe(u, r)
        shown = F.interpolate(Geometric.rendering(r), size=64, mode="bilinear", align_corners=False)
        assert torch.allclose(mixed, own + torch.sigmoid(torch.tensor(-3.0)) * (shown - own), atol=1e-6)
        gated.eta_g.gate[-1].bias.fill_(30.0)                                   # wide open
        assert torch.allclose(gated.observe(u, r), shown, atol=1e-5)
        gated.eta_g.gate[-1].bias.fill_(-3.0)
    x_q = torch.rand(1, 3, 64, 64)
    (-gated(x, v[:, :4], v[:, 4], x_q, sigma=0.5).sum()).backward()
    assert gated.eta_g.gate[-1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs a representation that renders the query view"):
        GQN(**dict(SMALL_GEOMETRIC, representation="tower"), observation="render_gate")


def test_a_checkpoint_written_before_the_observation_head_loads_as_the_same_model(tmp_path):
    """A checkpoint whose config says "render_gate": true (and whose gate's weights are render_gate.*) loads
    as observation "render_gate" with the same weights and outputs; one built with an option that was
    removed is refused in one sentence naming the commit that still builds it."""
    import checkpoint
    x, v, u = output_stage_inputs()
    gated = GQN(**SMALL_GEOMETRIC, observation="render_gate")
    old_config = {k: w for k, w in gated.config.items() if k != "observation"} | dict(render_gate=True)
    old_weights = {k.replace("eta_g.gate.", "render_gate."): w for k, w in gated.state_dict().items()}
    torch.save(dict(model=old_weights, config=old_config), tmp_path / "old.pt")
    rebuilt = checkpoint.rebuild_model(checkpoint.load(str(tmp_path / "old.pt")))
    assert rebuilt.config == gated.config
    with torch.no_grad():
        r = gated.encode(x, v[:, :4], v[:, 4])
        assert torch.equal(rebuilt.observe(u, r), gated.observe(u, r))
    torch.save(dict(model=old_weights, config=old_config | dict(frustum_conv=True)), tmp_path / "frustum.pt")
    with pytest.raises(checkpoint.CheckpointError,
                       match="--frustum_conv, an option measured and removed") as e:
        checkpoint.load(str(tmp_path / "frustum.pt"))
    assert "git checkout 49db708" in str(e.value) and "\n" not in str(e.value)
