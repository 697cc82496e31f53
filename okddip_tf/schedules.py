"""The distillation weight's ramp-up, as a pure function of the (fractional) epoch."""

import math


def rampup_weight(epoch, length=80, max_weight=1.0):
    """w(e) = max_weight * exp(-5 * (1 - min(e, L) / L)^2), Laine & Aila (arXiv 1610.02242).

    The authors' OKDDip code evaluates it once per 0-indexed epoch with L = 80 epochs, so
    w(0) = 0.0067 and w(e >= 80) = 1. A fractional `epoch` gives the per-step variant.

    Args:
      epoch: the 0-indexed epoch (float for per-step ramp-up).
      length: L, the ramp-up length in epochs; 0 means no ramp-up (always max_weight).
      max_weight: the weight after the ramp-up (the code's `alpha`, 1).
    """
    if length < 0:
        raise ValueError(f"The ramp-up length must be >= 0 epochs, got {length}.")
    if length == 0:
        return float(max_weight)
    progress = min(max(float(epoch), 0.0), float(length)) / length
    return float(max_weight * math.exp(-5.0 * (1.0 - progress) ** 2))
