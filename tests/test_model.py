"""The GQN model: shapes, sizes, the ELBO's parts, output ranges, torch-gqn compatibility."""

import os

import pytest
import torch

from dataset import shepard_metzler as sm
from dataset.viewpoints import SWAP_SIN_COS, raw_to_viewpoint
from model import GQN
from torch_gqn import (convert_viewpoint_order, from_torch_gqn_state_dict, load_torch_gqn_state_dict,
                       to_torch_gqn_state_dict)
from reference.plain_gqn import PlainGQN

TINY = dict(L=2, r_dim=16, h_dim=8, z_dim=2)


def batch(B=2, M=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, M, 3, 64, 64, generator=g), torch.randn(B, M, 7, generator=g),
            torch.randn(B, 7, generator=g), torch.rand(B, 3, 64, 64, generator=g))


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("representation", ["tower", "geometric"])
def test_n_samples_from_one_encoding_are_the_n_samples_of_a_repeated_batch(representation):
    model = GQN(**(TINY | dict(representation=representation, r_dim=24))).eval()
    model.eta_g.bias.data.fill_(0.5)                      # images inside (0, 1), where clamping hides nothing
    x, _, _, _ = batch(B=1)
    _, _, positions = sm.random_scene(seed=0, split="train", index=0, parts=5)   # cameras that see the scene
    cameras = torch.from_numpy(raw_to_viewpoint(sm.camera_from_position(positions[:4]))).float()
    v, v_q = cameras[None, :3], cameras[3:4]
    n = 3
    with torch.no_grad():
        torch.manual_seed(7)
        repeated = model.generate(x.expand(n, -1, -1, -1, -1), v.expand(n, -1, -1), v_q.expand(n, -1))
        torch.manual_seed(7)
        once = model.render(model.encode(x, v, v_q).expand(n, -1, -1, -1), v_q.expand(n, -1))
    assert torch.allclose(once, repeated, atol=1e-6) and not torch.equal(once[0], once[1])


def test_prior_temperature_scales_the_same_draw_and_zero_is_the_prior_mean():
    model = GQN(**TINY).eval()
    x, v, v_q, _ = batch()
    with torch.no_grad():
        def generate(seed, **kw):
            torch.manual_seed(seed)
            return model.generate(x, v, v_q, **kw)
        assert torch.equal(generate(1), generate(1, temperature=1.0))       # 1 is the model's own sampling
        assert not torch.equal(generate(1), generate(2))                    # which depends on the noise
        assert torch.equal(generate(1, temperature=0.0), generate(2, temperature=0.0))   # the mean does not
        half = generate(1, temperature=0.5)
        assert not torch.equal(half, generate(1)) and not torch.equal(half, generate(1, temperature=0.0))


@pytest.mark.parametrize("representation", ["pool", "tower", "pyramid"])
@pytest.mark.parametrize("shared_core", [False, True])
@pytest.mark.parametrize("upsample", ["learned", "broadcast"])
def test_output_shapes(representation, shared_core, upsample):
    model = GQN(representation, shared_core=shared_core, upsample=upsample, **TINY)
    x, v, v_q, x_q = batch()
    assert model(x, v, v_q, x_q, 1.0).shape == (2,)
    assert model.generate(x, v, v_q).shape == (2, 3, 64, 64)
    assert model.reconstruct(x, v, v_q, x_q).shape == (2, 3, 64, 64)
    assert model.kl_divergence(x, v, v_q, x_q).shape == (2,)
    r = model.encode(x, v)
    assert r.shape == ((2, 16, 16, 16) if representation == "tower" else (2, 16, 1, 1))


@pytest.mark.parametrize("representation", ["pool", "tower", "pyramid", "geometric"])
@pytest.mark.parametrize("upsample", ["learned", "broadcast"])
def test_the_model_knows_which_of_its_parameters_a_step_leaves_unused(representation, upsample):
    """train.py tells DistributedDataParallel to look for unused parameters from this; wrong either way, a
    multi-GPU run stops at its first step (unused and not told) or pays a graph search every step."""
    model = GQN(representation, upsample=upsample, **(TINY | dict(r_dim=24)))
    x, v, v_q, x_q = batch()
    model(x, v, v_q, x_q, 1.0).mean().backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None]
    assert model.unused_parameters == bool(unused), unused


def test_parameter_counts_match_the_original():
    torch.set_default_device("meta")  # count without allocating 2 GB per model
    try:
        _check_counts()
    finally:
        torch.set_default_device("cpu")


def _check_counts():
    # the original torch-gqn's default model and its shared-core variant, to the parameter
    assert n_params(GQN()) == 571_619_279
    assert n_params(GQN(shared_core=True)) == 49_469_343
    assert n_params(PlainGQN()) == 571_619_279
    # broadcasting v_q and r instead of learned k16 transposed convs (documented in the README)
    assert n_params(GQN(upsample="broadcast")) == 168_665_039
    assert n_params(GQN(upsample="broadcast", shared_core=True)) == 15_889_823


def test_elbo_is_log_likelihood_minus_kl_and_one_pass_gives_all_terms():
    model = GQN(**TINY)
    x, v, v_q, x_q = batch()
    torch.manual_seed(3)
    t = model.elbo_terms(x, v, v_q, x_q, 0.7)
    assert torch.allclose(t["elbo"], -t["nll"] - t["kl"])
    assert (t["kl"] >= 0).all()
    torch.manual_seed(3)
    elbo, kl, nll = model(x, v, v_q, x_q, 0.7, terms=True)
    assert torch.equal(elbo, t["elbo"]) and torch.equal(kl, t["kl"])
    torch.manual_seed(3)
    assert torch.allclose(model.kl_divergence(x, v, v_q, x_q), t["kl"])


def test_generate_and_reconstruct_are_images_in_unit_range():
    model = GQN(**TINY)
    with torch.no_grad():
        model.eta_g.bias.fill_(3.0)  # push the raw output out of [0, 1]: the methods must clamp
        x, v, v_q, x_q = batch()
        for image in (model.generate(x, v, v_q), model.reconstruct(x, v, v_q, x_q)):
            assert image.min() >= 0 and image.max() <= 1
            assert image.max() == 1  # clamped, not squashed


@pytest.mark.parametrize("representation", ["pool", "tower", "pyramid"])
@pytest.mark.parametrize("shared_core", [False, True])
def test_torch_gqn_state_dict_loads_and_computes_the_same_function(representation, shared_core):
    kw = dict(representation=representation, shared_core=shared_core, L=3, r_dim=16, h_dim=8)
    original = PlainGQN(**kw)          # torch-gqn's parameter names and formulation
    model = load_torch_gqn_state_dict(GQN(**kw), original.state_dict())
    x, v, v_q, x_q = batch()
    torch.manual_seed(5)
    expected = original(x, v, v_q, x_q, 0.9)
    torch.manual_seed(5)
    got = model(x, v, v_q, x_q, 0.9)
    assert torch.allclose(got, expected, rtol=1e-4, atol=0)
    # and back: the conversion is exact both ways
    back = to_torch_gqn_state_dict(model.state_dict())
    assert set(back) == set(original.state_dict())
    assert all(torch.equal(back[k], t) for k, t in original.state_dict().items())


def test_torch_gqn_names_with_dataparallel_prefix_load():
    original = PlainGQN(L=2, r_dim=16, h_dim=8)
    prefixed = {"module." + k: t for k, t in original.state_dict().items()}
    converted = from_torch_gqn_state_dict(prefixed)
    GQN(L=2, r_dim=16, h_dim=8).load_state_dict(converted)  # strict: every name matches


@pytest.mark.parametrize("shared_core", [False, True])
@pytest.mark.parametrize("upsample", ["learned", "broadcast"])
def test_fast_path_equals_plain_formulation(shared_core, upsample):
    """Precomputed fixed-input gates (and the exact broadcast trick) change nothing but speed."""
    kw = dict(shared_core=shared_core, upsample=upsample, L=3, r_dim=16, h_dim=8)
    fast = GQN(**kw)
    plain = GQN(**kw)
    plain.load_state_dict(fast.state_dict())
    plain.precompute_fixed = not fast.precompute_fixed
    x, v, v_q, x_q = batch()
    torch.manual_seed(7)
    a = fast(x, v, v_q, x_q, 0.7)
    torch.manual_seed(7)
    b = plain(x, v, v_q, x_q, 0.7)
    assert torch.allclose(a, b, rtol=1e-4, atol=0)
    ga = torch.autograd.grad(a.sum(), list(fast.parameters()), allow_unused=True)
    gb = torch.autograd.grad(b.sum(), list(plain.parameters()), allow_unused=True)
    for p, q in zip(ga, gb):
        assert (p is None) == (q is None)
        if p is not None:
            assert torch.allclose(p, q, rtol=1e-3, atol=1e-5)


def test_config_rebuilds_the_same_model():
    model = GQN("tower", shared_core=True, upsample="broadcast", **TINY)
    clone = GQN(**model.config)
    x, v, v_q, x_q = batch()

    def outputs(m, seed):
        """The ELBO and a generated image, with the noise of `seed`."""
        torch.manual_seed(seed)
        elbo = m(x, v, v_q, x_q, 0.7)
        return elbo, m.generate(x, v, v_q)

    fresh = outputs(clone, 4)                          # before loading: its own random weights
    clone.load_state_dict(model.state_dict())
    for seed in (4, 5):
        (elbo, image), (elbo_clone, image_clone) = outputs(model, seed), outputs(clone, seed)
        assert torch.equal(elbo_clone, elbo) and torch.equal(image_clone, image)   # same ELBO, same image
    assert not torch.allclose(fresh[0], outputs(model, 4)[0])   # the comparison tells two models apart


def test_bad_configuration_is_refused_in_one_sentence():
    with pytest.raises(ValueError, match="unknown representation 'cube'"):
        GQN("cube")
    with pytest.raises(ValueError, match="at least 1"):
        GQN(L=0)


@pytest.mark.parametrize("representation", ["pool", "pyramid"])
@pytest.mark.parametrize("upsample", ["learned", "broadcast"])
def test_checkpoint_of_the_other_viewpoint_order_converts_exactly(representation, upsample):
    kw = dict(representation=representation, upsample=upsample, L=2, r_dim=16, h_dim=8)
    deepmind = GQN(**kw)                       # pretend it was trained on DeepMind-order viewpoints
    ours = GQN(**kw)
    ours.load_state_dict(convert_viewpoint_order(deepmind.state_dict(), ours.config))
    x, v, v_q, x_q = batch()                   # viewpoints in this project's order
    torch.manual_seed(9)
    expected = deepmind(x, v[..., SWAP_SIN_COS], v_q[..., SWAP_SIN_COS], x_q, 0.8)
    torch.manual_seed(9)
    assert torch.allclose(ours(x, v, v_q, x_q, 0.8), expected, rtol=1e-5, atol=0)


def test_a_compiled_model_trains_on_as_sigma_anneals_without_recompiling(monkeypatch):
    """train.py --compile: sigma changes every step of its annealing. Passed as a float, torch.compile
    baked it into the graph, recompiled the model each step and, after 8, ran it uncompiled."""
    import torch._dynamo
    from engine import make_optimizer, train_step
    torch.manual_seed(0)
    model = GQN(**TINY)
    optimizer = make_optimizer(model, 1e-3)
    net = torch.compile(model, backend="eager")      # Dynamo's tracing and guards, without a C++ compiler
    frames = torch.randint(0, 256, (2, 3, 3, 64, 64), dtype=torch.uint8)
    viewpoints = torch.randn(2, 3, 7)
    torch._dynamo.reset()
    first = train_step(net, optimizer, frames, viewpoints, 1.0, torch.device("cpu"))
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    second = train_step(net, optimizer, frames, viewpoints, 0.9, torch.device("cpu"))   # a recompile raises
    assert first[2] != second[2]                           # and the new sigma did reach the likelihood
    torch._dynamo.reset()


COMPILED_STEP = """
import sys, torch
from model import GQN
torch.manual_seed(0)
model = GQN(representation="tower", L=1, shared_core=True, upsample="broadcast", r_dim=16, h_dim=8)
zero = lambda like: torch.zeros_like(like)   # z at its mean: compiled code draws other random numbers
x, v = torch.rand(2, 2, 3, 64, 64), torch.randn(2, 2, 7)
v_q, x_q = torch.randn(2, 7), torch.rand(2, 3, 64, 64)
sigma = torch.full((2,), 1.0)
grads = []
for net in (model, torch.compile(model)):
    model.zero_grad()
    elbo = net(x, v, v_q, x_q, sigma, noise=zero)
    (-elbo.mean()).backward()
    grads.append((elbo.detach(), [p.grad.clone() for p in model.parameters()]))
(e0, g0), (e1, g1) = grads
print(float((e0 - e1).abs().max() / e0.abs().max()),
      max(float((a - b).abs().max() / a.abs().max().clamp_min(1e-12)) for a, b in zip(g0, g1)))
"""


def test_train_py_compile_runs_the_model_with_inductors_cpu_code_forward_and_backward(tmp_path):
    """train.py --compile with the real compiler (the test above uses Dynamo alone): torch 2.13's inductor
    made CPU code for the backward of the broadcast core's indexing that crashed the process (a segfault
    at the first backward, on an AVX2 CPU); the core now spreads its small map with slices. Run in its own
    process, so a crash fails this test instead of ending the test run; the compiled ELBO and gradients
    must match eager mode."""
    import subprocess
    import sys
    from conftest import ROOT
    env = dict(os.environ, PYTHONPATH=ROOT, TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"))
    result = subprocess.run([sys.executable, "-c", COMPILED_STEP], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=540)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    elbo_error, grad_error = map(float, result.stdout.split())
    assert elbo_error < 1e-5 and grad_error < 1e-3, (elbo_error, grad_error)
