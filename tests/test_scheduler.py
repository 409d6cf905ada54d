"""The paper's annealing schedules: values at t = 0, n/2, n and beyond, and resumable state."""

import pytest
import torch

from scheduler import AnnealingStepLR, SigmaSchedule


def optimizer():
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def lr_after(steps, **kw):
    opt = optimizer()
    sched = AnnealingStepLR(opt, **kw)
    for _ in range(steps):
        opt.step()
        sched.step()
    return opt.param_groups[0]["lr"]


def test_learning_rate_reaches_the_optimizer_with_the_papers_values():
    kw = dict(mu_i=5e-4, mu_f=5e-5, n=1000)
    assert lr_after(0, **kw) == pytest.approx(5e-4)      # starts at mu_i, not at mu_f
    assert lr_after(500, **kw) == pytest.approx(2.75e-4)  # halfway
    assert lr_after(1000, **kw) == pytest.approx(5e-5)
    assert lr_after(1500, **kw) == pytest.approx(5e-5)    # stays at mu_f


def test_paper_defaults():
    sched = AnnealingStepLR(optimizer())
    assert (sched.mu_i, sched.mu_f, sched.n) == (5e-4, 5e-5, 1.6e6)
    sigma = SigmaSchedule()
    assert (sigma.sigma_i, sigma.sigma_f, sigma.n) == (2.0, 0.7, 2e5)


def test_sigma_values():
    s = SigmaSchedule(2.0, 0.7, 200)
    values = {}
    for t in range(301):
        values[t] = s.sigma
        s.step()
    assert values[0] == pytest.approx(2.0)
    assert values[100] == pytest.approx(1.35)
    assert values[200] == pytest.approx(0.7)
    assert values[300] == pytest.approx(0.7)


def test_state_survives_a_resume():
    opt = optimizer()
    sched, sigma = AnnealingStepLR(opt, 1e-3, 1e-4, 100), SigmaSchedule(2.0, 0.5, 100)
    for _ in range(40):
        opt.step()
        sched.step()
        sigma.step()
    opt2 = optimizer()
    sched2, sigma2 = AnnealingStepLR(opt2, 1e-3, 1e-4, 100), SigmaSchedule()
    sched2.load_state_dict(sched.state_dict())
    sigma2.load_state_dict(sigma.state_dict())
    assert sigma2.sigma == sigma.sigma
    for _ in range(10):
        for o, s, g in ((opt, sched, sigma), (opt2, sched2, sigma2)):
            o.step()
            s.step()
            g.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 + (1e-4 - 1e-3) * 0.5)
    assert sigma2.sigma == pytest.approx(sigma.sigma)
