"""The geometric representation's camera model: it must agree with the renderer, or every ray reads the
wrong pixels and the model learns nothing from the cameras (representation.py, Geometric)."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from dataset import shepard_metzler as sm
from dataset.viewpoints import raw_to_viewpoint
from evaluate import object_iou
from model import GQN
from representation import Geometric, GeometricFine, project


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
    context[:, :3] *= 0.2                                # cameras inside the scene: some points lie behind them
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
    expected = torch.stack(torch.broadcast_tensors(centres[None, :, None], centres[:, None, None]), -1)  # (row, col, D)
    np.testing.assert_allclose(grid.view(2, 8, 8, 5, 2).numpy(), expected.expand(2, 8, 8, 5, 2).numpy(), atol=1e-5)
    assert (depth > 0).all()


def test_views_carve_the_query_views_silhouette():
    """Space carving with the module's rays and projection: with the query view among the views, the
    carved object seen from the query camera is the query view's own silhouette."""
    centres, colours, positions = sm.random_scene(seed=1, split="test", index=4, parts=5)
    images = torch.from_numpy(sm.render_views(centres, colours, positions[:4])).permute(0, 3, 1, 2).float() / 255
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
    assert not torch.allclose(r1, r2)                                             # r depends on the query camera
    elbo = model(x, v[:, :4], v[:, 4], x[:, 0], 0.5)
    elbo.sum().backward()
    assert torch.isfinite(elbo).all()
    assert all(p.grad is not None for p in model.phi.parameters())                # every weight learns


def test_the_rendering_read_back_from_r_is_the_carved_query_view():
    """Geometric.rendering(r) (what --render_skip adds to the generator's output) is the composited colour:
    at initialisation, with the query view among the context views, the view's own object in place."""
    torch.manual_seed(0)
    centres, colours, positions = sm.random_scene(seed=1, split="test", index=4, parts=5)
    images = torch.from_numpy(sm.render_views(centres, colours, positions[:4])).permute(0, 3, 1, 2).float() / 255
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
    images = torch.from_numpy(sm.render_views(centres, colours, positions[:4])).permute(0, 3, 1, 2).float() / 255
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
    # --render_skip adds it to the generator's output as it is, with no resampling
    model = GQN(representation="geometric_fine", L=1, shared_core=True, upsample="broadcast", r_dim=72, h_dim=8,
                render_skip=True)
    u = torch.zeros(1, 8, 64, 64)
    with torch.no_grad():
        r = model.encode(images[None, :3], v[None, :3], v[3:4])
        added = model.observe(u, r) - model.eta_g(u)
    assert torch.allclose(added, GeometricFine.rendering(r), atol=1e-6)


SMALL_GEOMETRIC = dict(representation="geometric", L=2, shared_core=True, upsample="broadcast", r_dim=24, h_dim=8)


def output_stage_inputs():
    """Seeded inputs for the image stage of SMALL_GEOMETRIC: 4 random context views and a query camera of a
    built-in scene's (x (1, 4, 3, 64, 64), v (1, 5, 7)), and a random canvas u (1, 8, 64, 64)."""
    torch.manual_seed(0)
    _, _, positions = sm.random_scene(seed=0, split="train", index=0, parts=5)
    return torch.rand(1, 4, 3, 64, 64), viewpoints(positions[:5])[None], torch.randn(1, 8, 64, 64)


def test_render_skip_starts_the_generator_from_that_rendering_and_rebuilds_from_its_config():
    x, v, u = output_stage_inputs()
    plain, skip = GQN(**SMALL_GEOMETRIC), GQN(**SMALL_GEOMETRIC, render_skip=True)
    skip.load_state_dict(plain.state_dict())                                      # no weights of its own
    assert "render_skip" not in plain.config and GQN(**skip.config).render_skip
    with torch.no_grad():
        r = plain.encode(x, v[:, :4], v[:, 4])
        added = skip.observe(u, r) - plain.observe(u, r)
    expected = F.interpolate(Geometric.rendering(r), size=64, mode="bilinear", align_corners=False)
    assert torch.allclose(added, expected, atol=1e-6)


def test_render_gate_shows_the_rendering_where_it_opens_and_starts_nearly_closed():
    """--render_gate mixes, per pixel, the generator's eta_g(u) with the representation's own rendering: at
    initialisation 5 % of the rendering (the model starts as the paper's), fully open exactly the rendering;
    the gate learns from the loss, and the model rebuilds from its config."""
    x, v, u = output_stage_inputs()
    gated = GQN(**SMALL_GEOMETRIC, render_gate=True)
    assert GQN(**gated.config).render_gate is not None and "render_gate" not in GQN(**SMALL_GEOMETRIC).config
    with torch.no_grad():
        r = gated.encode(x, v[:, :4], v[:, 4])
        own, mixed = gated.eta_g(u), gated.observe(u, r)
        shown = F.interpolate(Geometric.rendering(r), size=64, mode="bilinear", align_corners=False)
        assert torch.allclose(mixed, own + torch.sigmoid(torch.tensor(-3.0)) * (shown - own), atol=1e-6)
        gated.render_gate[-1].bias.fill_(30.0)                                  # wide open
        assert torch.allclose(gated.observe(u, r), shown, atol=1e-5)
        gated.render_gate[-1].bias.fill_(-3.0)
    x_q = torch.rand(1, 3, 64, 64)
    (-gated(x, v[:, :4], v[:, 4], x_q, sigma=0.5).sum()).backward()
    assert gated.render_gate[-1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="choose one"):
        GQN(**SMALL_GEOMETRIC, render_gate=True, render_skip=True)


def test_the_agreement_vote_turns_away_from_the_view_that_disagrees():
    """Three views see a point; one (occluded, say) sees another colour. With agreement_vote a positive
    vote_mean moves the point's colour towards the two that agree; without it vote_mean has no effect
    (its term is the same for every view), so the models trained before it compute as they did."""
    seen = torch.tensor([[0.8, 0.1, 0.1], [0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])       # (M, 3): red, red, blue
    seen = seen[None, :, :, None]                                                     # (B=1, M, C=3, P=1)
    cos = torch.zeros(1, 3)                                                           # every view as near
    for agreement in (False, True):
        phi = Geometric(r_dim=32, agreement_vote=agreement)
        blend = lambda vote_mean: phi._nearest(seen, seen.mean(dim=1), cos, torch.zeros(3), vote_mean)[0, :, 0]
        neutral, voted = blend(torch.zeros(3)), blend(torch.full((3,), 5.0))
        assert torch.allclose(neutral, seen[0, :, :, 0].mean(dim=0))                 # no vote: the plain mean
        if agreement:
            assert voted[0] > neutral[0] + 0.2 and voted[2] < neutral[2] - 0.2        # towards the two reds
        else:
            assert torch.allclose(voted, neutral)


def test_the_frustum_conv_starts_as_without_it_and_its_correction_reaches_the_rendering():
    """--frustum_conv: at initialisation r is exactly the plain representation's (the 3D CNN's last layer is
    zero), and the model rebuilds from its config; the CNN's correction moves the opacity along the rays,
    so the rendering (a strongly negative correction empties the carved hull), and the loss reaches it."""
    centres, colours, positions = sm.random_scene(seed=1, split="test", index=4, parts=5)
    images = torch.from_numpy(sm.render_views(centres, colours, positions[:4])).permute(0, 3, 1, 2).float() / 255
    x, v = images[None, :3], viewpoints(positions[:4])[None]
    plain, conv = GQN(**SMALL_GEOMETRIC), GQN(**SMALL_GEOMETRIC, frustum_conv=True)
    assert conv.load_state_dict(plain.state_dict(), strict=False).missing_keys == [
        f"phi.frustum.{i}.{w}" for i in (0, 2, 4) for w in ("weight", "bias")]    # its own weights only
    assert GQN(**conv.config).phi.frustum is not None and "frustum_conv" not in plain.config
    with torch.no_grad():
        assert torch.equal(conv.encode(x, v[:, :3], v[:, 3]), plain.encode(x, v[:, :3], v[:, 3]))
        carved = Geometric.rendering(conv.encode(x, v[:, :3], v[:, 3]))
        conv.phi.frustum[-1].bias.fill_(-200.0)                                   # "nothing here", everywhere
        emptied = Geometric.rendering(conv.encode(x, v[:, :3], v[:, 3]))
        conv.phi.frustum[-1].bias.zero_()
    assert carved.amax(dim=1).gt(0.1).float().mean() > 0.05 and emptied.abs().max() < 1e-3
    (-conv(x, v[:, :3], v[:, 3], images[None, 3], sigma=0.5).sum()).backward()
    assert conv.phi.frustum[-1].weight.grad.abs().sum() > 0


def test_the_view_net_starts_as_without_it_and_its_judgement_reaches_both_renderings():
    """--view_net: at initialisation r is exactly the plain representation's (the per-view MLP's last layer is
    zero) and the model rebuilds from its config; once its judgement differs between views it changes the
    colours of both the 32x32 features and the 64x64 rendering, and the loss reaches it."""
    centres, colours, positions = sm.random_scene(seed=1, split="test", index=4, parts=5)
    images = torch.from_numpy(sm.render_views(centres, colours, positions[:4])).permute(0, 3, 1, 2).float() / 255
    x, v = images[None, :3], viewpoints(positions[:4])[None]
    small_fine = dict(SMALL_GEOMETRIC, representation="geometric_fine", r_dim=72)
    plain, judged = GQN(**small_fine), GQN(**small_fine, view_net=True)
    assert judged.load_state_dict(plain.state_dict(), strict=False).missing_keys == [
        f"phi.view_net.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")]      # its own weights only
    assert GQN(**judged.config).phi.view_net is not None and "view_net" not in plain.config
    with torch.no_grad():
        r = judged.encode(x, v[:, :3], v[:, 3])
        assert torch.equal(r, plain.encode(x, v[:, :3], v[:, 3]))
        judged.phi.view_net[-1].bias.fill_(5.0)             # the same logit for every view cancels in the softmax
        assert torch.allclose(judged.encode(x, v[:, :3], v[:, 3]), r, atol=1e-5)
        torch.nn.init.normal_(judged.phi.view_net[-1].weight, std=3.0)
        moved = judged.encode(x, v[:, :3], v[:, 3])
    rendered, before = GeometricFine.rendering(moved), GeometricFine.rendering(r)
    assert (rendered - before).abs().amax() > 0.05                            # the 64x64 rendering's colours
    assert (moved[:, :-64] - r[:, :-64]).abs().amax() > 1e-3                  # the 32x32 pass's features
    (-judged(x, v[:, :3], v[:, 3], images[None, 3], sigma=0.5).sum()).backward()
    assert judged.phi.view_net[0].weight.grad.abs().sum() > 0
