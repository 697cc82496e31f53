"""Training methods: which loss a group model minimises and what it needs to build.

Adding a method is one pure loss function in `losses.py`, one entry here and one config file.
"""

import dataclasses
import functools
from typing import Callable

from okddip_tf import losses


@dataclasses.dataclass(frozen=True)
class Method:
    """How one training method uses the group.

    Attributes:
      loss_fn: pure function `(labels, outputs, **options) -> dict of scalars` with a `loss` key.
      terms: the loss terms it returns besides `loss`, in logging order.
      distills: whether it takes `temperature`, `distill_weight` and the target options.
      uses_attention: whether the model must build the peer attention.
      min_students, max_students: the allowed group sizes m.
    """

    loss_fn: Callable
    terms: tuple
    distills: bool
    uses_attention: bool
    min_students: int
    max_students: int

    def bind(self, *, temperature, detach_targets, target_space):
        """Returns `fn(labels, outputs, distill_weight) -> dict` with the options fixed."""
        if self.distills:
            fn = functools.partial(
                self.loss_fn,
                temperature=temperature,
                detach_targets=detach_targets,
                target_space=target_space,
            )
            return lambda labels, outputs, distill_weight: fn(
                labels, outputs, distill_weight=distill_weight
            )
        return lambda labels, outputs, distill_weight: self.loss_fn(labels, outputs)


METHODS = {
    "okddip": Method(
        losses.okddip_loss,
        terms=("peer_ce", "leader_ce", "peer_kd", "leader_kd"),
        distills=True,
        uses_attention=True,
        min_students=2,
        max_students=8,
    ),
    "independent": Method(
        losses.independent_loss,
        terms=("peer_ce", "leader_ce"),
        distills=False,
        uses_attention=False,
        min_students=2,
        max_students=8,
    ),
    "baseline": Method(
        losses.baseline_loss,
        terms=("leader_ce",),
        distills=False,
        uses_attention=False,
        min_students=1,
        max_students=1,
    ),
}


def get_method(name):
    """Looks up a method by name; the error lists the known ones."""
    if name not in METHODS:
        raise ValueError(
            f"Unknown method {name!r}. Known methods: {sorted(METHODS)}. "
            "Set it with method=... or --config.model.method=..."
        )
    return METHODS[name]
