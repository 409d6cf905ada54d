"""The geometric representation for cameras inside a room (geometric.GeometricRooms): its room must be the
renderer's, or every ray leaves it at the wrong wall, and its rendering of a view it was shown must be that
view."""

import numpy as np
import pytest
import torch

import geometric
from conftest import short_preset_run
from dataset import rooms
from dataset.labels import FIRST_OBJECT, FLOOR, SKY, WALL
from dataset.viewpoints import raw_to_viewpoint
from geometric import GeometricRooms, pixel_rays, room_exit, surface_colours
from model import GQN
from test_rooms import interior


def scene(index, kind=rooms.DATASET):
    """Test scene `index` of seed 0: its views x (V, 3, 64, 64) in [0, 1], cameras v (V, 7), labels."""
    room = rooms.random_room(0, "test", index, kind=kind)
    images, labels = rooms.render_room(room)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    return x, torch.from_numpy(raw_to_viewpoint(room.cameras)).float(), torch.from_numpy(labels)


def test_rays_leave_the_room_where_the_walls_floor_and_sky_are():
    origin = torch.tensor([[0.0, 0.0, 0.5]])
    dirs = torch.tensor([[[1.0, 0, 0], [0, -1, 0], [0, 0, -1], [0, 0, 1], [1, 0, 0.1], [1, 0, 0.5]]])
    t, surface = room_exit(origin, dirs)
    np.testing.assert_allclose(t[0, :5].numpy(), [3.5, 3.5, 0.5, geometric.SKY_DEPTH, 3.5])
    assert surface[0].tolist() == [1, 2, geometric.FLOOR, geometric.SKY, 1, geometric.SKY]   # over the wall


@pytest.mark.parametrize("kind", rooms.KINDS)
def test_the_surface_each_pixel_shows_is_the_renderers(kind):
    """Every pixel that the renderer labels wall, floor or sky leaves the room there by room_exit."""
    for index in range(3):
        x, v, labels = scene(index, kind)
        _, surface = room_exit(*pixel_rays(v, 64))
        surface = surface.view(-1, 64, 64)
        expect = torch.where(surface == geometric.SKY, SKY,
                             torch.where(surface == geometric.FLOOR, FLOOR, WALL))
        if labels.shape[-1] != 64:                                   # 128-pixel frames: labels at 64
            labels = labels[:, 1::2, 1::2]
        room = labels < FIRST_OBJECT
        agree = (expect == labels.long())[room].float().mean().item()
        assert agree > 0.995, (index, agree)


def test_surface_colours_are_medians_and_an_unseen_wall_takes_the_walls_colour():
    images = torch.tensor([[[[0.1, 0.2, 0.9, 0.5, 0.5, 0.3]] * 3]])       # (B 1, M 1, 3, P 6)
    surface = torch.tensor([[[0, 0, 0, geometric.FLOOR, geometric.FLOOR, geometric.FLOOR]]])
    colours = surface_colours(images, surface, geometric.SKY + 1, geometric.WALLS)   # (1, 6, 3)
    np.testing.assert_allclose(colours[0, 0].numpy(), [0.2] * 3)          # the median of the wall's three
    np.testing.assert_allclose(colours[0, 3].numpy(), [0.2] * 3)          # unseen wall: the walls' median
    np.testing.assert_allclose(colours[0, geometric.FLOOR].numpy(), [0.5] * 3)
    np.testing.assert_allclose(colours[0, geometric.SKY].numpy(), [0.0] * 3)   # no sky in view


def test_the_light_fitted_to_three_views_lights_the_walls_and_floor_of_the_others():
    """RoomLight finds the room's light from 3 views' room pixels, near the renderer's, and colours the other
    views' walls and floor closer to the truth than their median colour does (a wall turned from the light
    is darker, one near it brighter)."""
    g = GeometricRooms(r_dim=96)
    context, others = [0, 3, 6], [1, 2, 4, 5, 7, 8, 9]
    lit_error, median_error = [], []
    for index in range(4):
        x, v, labels = scene(index)
        with torch.no_grad():
            fg, medians, points, surface, light = g.foreground(x[None, context], v[None, context])
            light, albedo = g.light(x[None, context], points, surface, 1 - fg[:, :, 0], light)
            true_light = torch.tensor(rooms.LIGHTS[rooms.random_room(0, "test", index).light][0])
            assert (light[0] - true_light).norm() < 1.0, (index, light[0], true_light)
            pos, dirs = pixel_rays(v[others], 64)
            t, where = room_exit(pos, dirs)
            n = len(others)
            lit = g.light.colour(light.expand(n, 3), albedo.expand(n, -1, -1),
                                 pos[:, None] + dirs * t[..., None], where)          # (n, 3, P)
            median = medians[0, where].transpose(1, 2)
        truth = x[others].flatten(2)
        room = torch.from_numpy(np.stack([interior(m) for m in labels[others].numpy() < FIRST_OBJECT]))
        room = room.flatten(1) & (where < geometric.SKY)
        lit_error.append((lit - truth).abs().mean(1)[room].mean())
        median_error.append((median - truth).abs().mean(1)[room].mean())
    lit_error, median_error = torch.stack(lit_error), torch.stack(median_error)
    assert (lit_error < 0.07).all() and (lit_error < 0.75 * median_error).all(), (lit_error, median_error)


def test_the_light_is_chosen_alike_under_bfloat16_autocast():
    """With --dtype bfloat16 (autocast), RoomLight's least squares would cancel in bfloat16 and pick other
    lights; it runs in float32, so each room gets the light it gets in float32."""
    g = GeometricRooms(r_dim=96)
    context = [0, 3, 6]
    x, v = map(torch.stack, zip(*[scene(index)[:2] for index in range(4)]))
    with torch.no_grad():
        light = g.foreground(x[:, context], v[:, context])[4]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            light_bf16 = g.foreground(x[:, context], v[:, context])[4]
    assert torch.equal(light, light_bf16), (light, light_bf16)


def test_a_query_view_among_the_context_views_is_rendered_as_it_is():
    """With the query camera one of the context cameras, the untrained rendering shows that view: its room
    (wall, floor, sky) read back where it is, its objects carved where they stand."""
    for index in range(3):
        x, v, labels = scene(index)
        context, v_c = x[[0, 3, 6]][None], v[[0, 3, 6]][None]
        g = GeometricRooms(r_dim=96).eval()
        with torch.no_grad():
            image = GeometricRooms.rendering(g(context, v_c, v[None, 3]))[0]
        error = (image - x[3]).abs().mean(0)
        room = torch.from_numpy(interior(labels[3].numpy() < FIRST_OBJECT))
        assert error[room].mean() < 0.03, (index, error[room].mean())
        objects = labels[3] >= FIRST_OBJECT
        assert error[objects].mean() < 0.12, (index, error[objects].mean())


def test_it_learns_its_foreground_and_agreement_and_refuses_other_image_sizes():
    x, v, _ = scene(0)
    model = GQN("geometric_rooms", L=2, shared_core=True, upsample="broadcast", r_dim=96, h_dim=16,
                observation="render_gate")
    terms = model.elbo_terms(x[None, :3], v[None, :3], v[None, 3], x[None, 3], sigma=0.5)
    (-terms["elbo"].mean()).backward()
    phi = model.phi
    for name in ("fg_gain", "fg_level", "agree_gain", "agree_level"):
        assert getattr(phi, name).grad.abs() > 0, name
    for name in ("log_ambient", "log_falloff"):                     # the room's lighting is learnt too
        assert getattr(phi.light, name).grad.abs() > 0, name
    assert phi.fg_net[-1].weight.grad.abs().sum() > 0
    small = torch.nn.functional.interpolate(x, size=32)
    with pytest.raises(ValueError, match="renders 64x64 images, not 32x32"):
        phi(small[None, :3], v[None, :3], v[None, 3])


def test_the_rooms_geometric_preset_trains_on_the_built_in_rooms_and_saves_what_it_learnt(tmp_path):
    """`--preset rooms_geometric` (shortened): renders the built-in rooms, trains the geometric_rooms model
    with the render gate, scores the held-out rooms' regions, and its checkpoint holds what it learnt."""
    import checkpoint
    state, final = short_preset_run("rooms_geometric", tmp_path)
    assert state["config"]["representation"] == "geometric_rooms"
    assert state["config"]["observation"] == "render_gate"
    assert state["model"]["phi.fg_level"] != 0.16               # its foreground test learnt, and was saved
    assert {"object_iou_generation", "wall_error_generation", "floor_error_generation"} <= set(final)
    x, v, _ = scene(0)
    model = checkpoint.rebuild_model(state).eval()
    with torch.no_grad():
        image = model.generate(x[None, :3], v[None, :3], v[None, 3])
    assert image.shape == (1, 3, 64, 64) and torch.isfinite(image).all()
