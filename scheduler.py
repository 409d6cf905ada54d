"""The paper's annealing schedules (Algorithm S1): learning rate mu and pixel standard deviation sigma.

Both anneal linearly from an initial to a final value over n steps and then stay at the final value:
    value(t) = max(final + (initial - final) * (1 - t / n), final)
with, in the paper, mu: 5e-4 -> 5e-5 over 1.6e6 steps and sigma: 2.0 -> 0.7 over 2e5 steps.
`AnnealingStepLR` drives the optimizer's learning rate itself (a schedule that never reaches the
optimizer is a known pitfall), and both schedules save and restore their state for --resume.
"""

from torch.optim.lr_scheduler import LRScheduler


def linear_anneal(t, initial, final, n):
    """max(final + (initial - final) * (1 - t / n), final); for initial < final it rises to final."""
    value = final + (initial - final) * (1 - t / n)
    return max(value, final) if initial >= final else min(value, final)


class AnnealingStepLR(LRScheduler):
    """Learning rate mu_t = linear_anneal(t, mu_i, mu_f, n) for every parameter group."""

    def __init__(self, optimizer, mu_i=5e-4, mu_f=5e-5, n=1.6e6, last_epoch=-1):
        self.mu_i, self.mu_f, self.n = mu_i, mu_f, n
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [linear_anneal(self.last_epoch, self.mu_i, self.mu_f, self.n) for _ in self.optimizer.param_groups]


class SigmaSchedule:
    """Pixel standard deviation sigma_t = linear_anneal(t, sigma_i, sigma_f, n); call step() once per step."""

    def __init__(self, sigma_i=2.0, sigma_f=0.7, n=2e5):
        self.sigma_i, self.sigma_f, self.n = sigma_i, sigma_f, n
        self.t = 0

    @property
    def sigma(self):
        return linear_anneal(self.t, self.sigma_i, self.sigma_f, self.n)

    def step(self):
        self.t += 1

    def state_dict(self):
        return dict(sigma_i=self.sigma_i, sigma_f=self.sigma_f, n=self.n, t=self.t)

    def load_state_dict(self, state):
        self.sigma_i, self.sigma_f, self.n, self.t = state["sigma_i"], state["sigma_f"], state["n"], state["t"]
