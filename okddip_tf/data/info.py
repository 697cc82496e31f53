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
    """What a model and a training loop need to know about a dataset.

    Image datasets have `image_shape` (H, W, C) and the pixel statistics. Other inputs (token ids,
    features, frames: the npz source) have `image_shape` None, no pixel statistics, and their
    per-example `input_shape` and `input_dtype` ("int32" or "float32").
    """

    name: str
    num_classes: int
    image_shape: tuple[int, int, int] | None
    class_names: tuple[str, ...] | None
    num_train_examples: int
    num_eval_examples: int
    pixel_mean: tuple[float, ...]
    pixel_std: tuple[float, ...]
    input_shape: tuple[int, ...] | None = None
    input_dtype: str = "uint8"

    @property
    def example_shape(self):
        """One example's shape: the image shape, or the other input's."""
        return tuple(self.image_shape or self.input_shape)
