r"""Discrete-time noise schedules $\beta_1, \dots, \beta_T$ for D3PM transitions, computed on the host in float64."""

import abc

import equinox as eqx
import numpy as np


def _check_num_steps(num_steps: int) -> None:
    if not (isinstance(num_steps, int) and num_steps >= 1):
        raise ValueError(f"`num_steps` must be an int >= 1; got num_steps={num_steps!r}")


class AbstractBetaSchedule(eqx.Module):
    r"""A sequence $\beta_1, \dots, \beta_T$ parameterising the one-step transition matrices $Q_t$.

    For uniform and absorbing transitions $\beta_t \in [0, 1]$ is the probability of jumping at step $t$; for the
    discretised Gaussian it is the variance parameter; for the embedding transition it is the CTMC time step.
    Returned as a float64 numpy array, since the cumulative products $\bar Q_t$ are formed on the host in float64.
    """

    @abc.abstractmethod
    def betas(self, num_steps: int) -> np.ndarray:
        """The float64 array $(\\beta_1, \\dots, \\beta_T)$ of shape `(num_steps,)`."""


class LinearBetaSchedule(AbstractBetaSchedule):
    r"""$\beta_t$ linear from `beta_start` ($t = 1$) to `beta_end` ($t = T$) (D3PM's schedule for the discretised
    Gaussian, 0.02 to 1; Austin et al., 2021, App. B.2)."""

    beta_start: float = 0.02
    beta_end: float = 1.0

    def __check_init__(self):
        if not (0 < self.beta_start <= self.beta_end):
            raise ValueError(
                f"LinearBetaSchedule needs 0 < beta_start <= beta_end; got beta_start={self.beta_start}, "
                f"beta_end={self.beta_end}"
            )

    def betas(self, num_steps: int) -> np.ndarray:
        _check_num_steps(num_steps)
        return np.linspace(self.beta_start, self.beta_end, num_steps, dtype=np.float64)


class CosineBetaSchedule(AbstractBetaSchedule):
    r"""$\beta_t = 1 - \bar\alpha_t / \bar\alpha_{t-1}$ with $\bar\alpha_t = \cos\big(\frac{\pi}{2}
    \frac{t/T + s}{1 + s}\big)$, as in D3PM's uniform runs (Austin et al., 2021, App. B.1, after Nichol & Dhariwal,
    2021). For a uniform transition $\bar\alpha_t$ is then the probability that $x_t$ has not been resampled."""

    offset: float = 0.008

    def __check_init__(self):
        if not self.offset >= 0:
            raise ValueError(f"CosineBetaSchedule needs offset >= 0; got offset={self.offset}")

    def betas(self, num_steps: int) -> np.ndarray:
        _check_num_steps(num_steps)
        s = np.arange(num_steps + 1, dtype=np.float64) / num_steps
        abar = np.cos(0.5 * np.pi * (s + self.offset) / (1.0 + self.offset))
        abar = np.clip(abar, 0.0, 1.0)
        return np.clip(1.0 - abar[1:] / abar[:-1], 0.0, 1.0)


class MutualInformationSchedule(AbstractBetaSchedule):
    r"""$\beta_t = 1/(T - t + 1)$: for an absorbing transition $\bar\alpha_t = 1 - t/T$, so the mutual information
    between $x_0$ and $x_t$ falls linearly to 0 at $t = T$ (Austin et al., 2021, Sec. 4; Sohl-Dickstein et al.,
    2015). Meant for `AbsorbingTransition`."""

    def betas(self, num_steps: int) -> np.ndarray:
        _check_num_steps(num_steps)
        t = np.arange(1, num_steps + 1, dtype=np.float64)
        return 1.0 / (num_steps - t + 1.0)
