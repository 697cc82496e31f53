"""What every data source reports about its dataset, with no TensorFlow import (JAX runs use it)."""

from __future__ import annotations

import dataclasses

KNOWN_PIXEL_STATS = {
    "cifar10": (tuple(255.0 * m for m in (0.4914, 0.4822, 0.4465)),
                tuple(255.0 * s for s in (0.2470, 0.2435, 0.2616))),
    "cifar100": (tuple(255.0 * m for m in (0.5071, 0.4865, 0.4409)),
                 tuple(255.0 * s for s in (0.2673, 0.2564, 0.2762))),
}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and a training loop need to know about a dataset."""

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...] | None
    num_train_examples: int
    num_eval_examples: int
    pixel_mean: tuple[float, ...]
    pixel_std: tuple[float, ...]
