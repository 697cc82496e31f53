"""What a backbone is: how to build one student's trunk and head (the `Backbone` type).

The registry of named backbones is `okddip_tf.models.registry`; a user's own Keras model becomes a
`Backbone` through `okddip_tf.models.keras_backbone.from_keras`.
"""

import dataclasses
from typing import Callable, Optional

from okddip_tf.inputs import InputSpec, image_spec


@dataclasses.dataclass(frozen=True)
class Backbone:
    """How to build one student network in two parts.

    Attributes:
      name: the registry name (for a user's model, its model name).
      build_trunk: `(name, sync_batchnorm) -> keras.Model` mapping the input (normalised images
        [B, H, W, 3] for the paper's networks; see `input_spec`) to the trunk's output
        [B, ..., trunk_channels].
      build_head: `(name, num_classes, sync_batchnorm, deployed=False) -> keras.Model` mapping the
        trunk's feature map to `[features, logits]`: the pooled features [B, feature_dim] used by
        the attention and the logits [B, num_classes]. Branch-based groups share one trunk and
        give each student its own head; network-based groups give each student its own trunk as
        well. `deployed` marks the head of the student `okddip export` deploys (a user's model
        with kept weights keeps its classifier there and draws the others afresh, `from_keras`).
      trunk_channels: channels of the trunk's output.
      feature_dim: size of the pooled features.
      options: the (key, value) pairs a registered backbone was configured with.
      raw_pixels: the network normalises its input itself (e.g. a `keras.applications` model
        with built-in preprocessing): the group then feeds it raw [0, 255] pixels.
      config: how to rebuild it, when it is not "registered name + options" (see `from_keras`).
      linear_init_std: the authors' branch-based model of this network draws every linear layer,
        the attention's W_L and W_E and ONE's gate included, from N(0, linear_init_std) (their
        VGG-16: 0.01); None: PyTorch's default U(+-1/sqrt(fan_in)) for those layers.
      input_spec: what the network takes (`okddip_tf.inputs.InputSpec`: shape, dtype, kind);
        None: raw images of any height and width with 3 channels, as the paper's networks.
        Only image backbones get the group's pixel normalisation (unless `raw_pixels`).
    """

    name: str
    build_trunk: Callable = dataclasses.field(compare=False)
    build_head: Callable = dataclasses.field(compare=False)
    trunk_channels: int
    feature_dim: int
    options: tuple = ()
    raw_pixels: bool = False
    config: Optional[dict] = dataclasses.field(default=None, compare=False, repr=False)
    linear_init_std: Optional[float] = None
    input_spec: Optional[InputSpec] = dataclasses.field(default=None, compare=False)

    def inputs(self):
        """The `InputSpec` of what the network takes (raw images for the paper's networks)."""
        return self.input_spec or image_spec()

    @property
    def normalizes_pixels(self):
        """Whether the group puts a pixel normalisation before it: image inputs that the
        network does not normalise itself."""
        return self.inputs().is_image and not self.raw_pixels

    def get_config(self):
        """A JSON-able dict that `backbone_from_config` turns back into this backbone."""
        if self.config is not None:
            return dict(self.config)
        return {"name": self.name, "options": dict(self.options)}
