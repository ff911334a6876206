"""DP-FedAvg's privacy budget (McMahan et al. 2018) from Google's dp-accounting library.

Each round samples every client independently with probability q (Poisson), clips each client's
update to L2 norm S and adds Gaussian noise of standard deviation z * S to their sum: one
Poisson-subsampled Gaussian mechanism of noise multiplier z per round, at the user level (adding or
removing one client's whole data). The RDP accountant composes the rounds run so far; its only
state is that count, which the checkpoint holds as the round number.
"""

from __future__ import annotations

import dp_accounting
from dp_accounting import rdp


def default_delta(num_clients: int) -> float:
    """delta below 1/N, as the field's convention (N = users)."""
    return 1.0 / num_clients ** 1.1


def epsilon(rounds: int, sampling_rate: float, noise_multiplier: float, delta: float) -> float:
    """epsilon at delta after `rounds` rounds; inf without noise."""
    if noise_multiplier <= 0:
        return float("inf")
    accountant = rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier))
    accountant.compose(event, rounds)
    return float(accountant.get_epsilon(delta))
