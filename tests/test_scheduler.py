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
    """The schedules train.py builds for its default (paper) preset follow the paper (Algorithm S1):
    mu 5e-4 -> 5e-5 over 1.6e6 steps, sigma 2.0 -> 0.7 over 2e5 steps, linear, then constant."""
    import train
    args = train.parse_args([])
    assert args.preset == "paper"
    assert (args.mu_i, args.mu_f, args.mu_n) == (5e-4, 5e-5, 1.6e6)
    assert (args.sigma_i, args.sigma_f, args.sigma_n) == (2.0, 0.7, 2e5)
    # built as train.py builds them
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=args.mu_i)
    lr_schedule = AnnealingStepLR(opt, args.mu_i, args.mu_f, args.mu_n)
    sigma_schedule = SigmaSchedule(args.sigma_i, args.sigma_f, args.sigma_n)

    def lr_at(t):
        """The optimizer's learning rate after step t (the resume path jumps to step t - 1)."""
        lr_schedule.load_state_dict({**lr_schedule.state_dict(), "last_epoch": t - 1})
        opt.step()
        lr_schedule.step()
        return opt.param_groups[0]["lr"]

    # mu_t = mu_f + (mu_i - mu_f) (1 - t / 1.6e6), at least mu_f
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-4, rel=1e-12)
    assert lr_at(400_000) == pytest.approx(5e-5 + 4.5e-4 * 0.75, rel=1e-12)      # 3.875e-4
    assert lr_at(800_000) == pytest.approx(2.75e-4, rel=1e-12)                   # half-way
    assert lr_at(1_600_000) == pytest.approx(5e-5, rel=1e-12)
    assert lr_at(2_000_000) == pytest.approx(5e-5, rel=1e-12)                    # the last of 2e6 steps
    # sigma_t = 0.7 + 1.3 (1 - t / 2e5), at least 0.7: stepped one by one, as training does
    sigmas = {}
    for t in range(250_001):
        if t % 50_000 == 0:
            sigmas[t] = sigma_schedule.sigma
        sigma_schedule.step()
    assert sigmas[0] == pytest.approx(2.0, rel=1e-12)
    assert sigmas[50_000] == pytest.approx(0.7 + 1.3 * 0.75, rel=1e-12)           # 1.675
    assert sigmas[100_000] == pytest.approx(1.35, rel=1e-12)                      # half-way
    assert sigmas[200_000] == pytest.approx(0.7, rel=1e-12)
    assert sigmas[250_000] == pytest.approx(0.7, rel=1e-12)


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
