"""The paper's annealing schedules (Algorithm S1): learning rate mu and pixel standard deviation sigma.

Both anneal linearly from an initial to a final value over n steps and then stay at the final value:
    value(t) = max(final + (initial - final) * (1 - t / n), final)
with, in the paper, mu: 5e-4 -> 5e-5 over 1.6e6 steps and sigma: 2.0 -> 0.7 over 2e5 steps.
The KL weight beta (not in the paper, whose beta is 1) anneals the same way.
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
        return [linear_anneal(self.last_epoch, self.mu_i, self.mu_f, self.n)
                for _ in self.optimizer.param_groups]


class LinearSchedule:
    """A value that anneals as linear_anneal(t, initial, final, n); call step() once per training step.
    Subclasses name their two ends (`ends`), which are also the keys of the saved state."""

    ends = ("initial", "final")

    def __init__(self, initial, final, n):
        setattr(self, self.ends[0], initial)
        setattr(self, self.ends[1], final)
        self.n, self.t = n, 0

    @property
    def value(self):
        return linear_anneal(self.t, getattr(self, self.ends[0]), getattr(self, self.ends[1]), self.n)

    def step(self):
        self.t += 1

    def state_dict(self):
        return {self.ends[0]: getattr(self, self.ends[0]), self.ends[1]: getattr(self, self.ends[1]),
                "n": self.n, "t": self.t}

    def load_state_dict(self, state):
        for key in (*self.ends, "n", "t"):
            setattr(self, key, state[key])


class SigmaSchedule(LinearSchedule):
    """Pixel standard deviation sigma_t = linear_anneal(t, sigma_i, sigma_f, n)
    (paper: 2.0 -> 0.7 over 2e5)."""

    ends = ("sigma_i", "sigma_f")

    def __init__(self, sigma_i=2.0, sigma_f=0.7, n=2e5):
        super().__init__(sigma_i, sigma_f, n)

    @property
    def sigma(self):
        return self.value


class KLWeightSchedule(LinearSchedule):
    """Weight beta_t = linear_anneal(t, beta_i, beta_f, n) of the KL term in the training loss
    nll + beta * KL. The paper has none (beta = 1 throughout: the ELBO); a warm-up from a small beta_i is
    a departure that other GQN codes use (the logged -ELBO is always the unweighted one)."""

    ends = ("beta_i", "beta_f")

    def __init__(self, beta_i=1.0, beta_f=1.0, n=1):
        super().__init__(beta_i, beta_f, n)

    @property
    def beta(self):
        return self.value
