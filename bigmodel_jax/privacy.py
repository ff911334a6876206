"""The privacy budget of DP-SGD and DP-FedAvg from Google's dp-accounting library.

Both are, per step (or round), one Poisson-subsampled Gaussian mechanism: each record (an example
for DP-SGD, a client's whole data for DP-FedAvg, McMahan et al. 2018) is in the batch with
probability q, its contribution clipped to L2 norm S, Gaussian noise of standard deviation z * S
added to the sum. The RDP accountant composes the steps run so far; its only state is that count,
which a checkpoint holds as the step (or round) number.
"""

from __future__ import annotations

import dp_accounting
from dp_accounting import rdp


def default_delta(num_records: int) -> float:
    """delta below 1/N, the field's convention (N = the records: examples or users)."""
    return 1.0 / num_records ** 1.1


def epsilon(rounds: int, sampling_rate: float, noise_multiplier: float, delta: float) -> float:
    """epsilon at delta after `rounds` rounds; inf without noise."""
    if noise_multiplier <= 0:
        return float("inf")
    accountant = rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier))
    accountant.compose(event, rounds)
    return float(accountant.get_epsilon(delta))
