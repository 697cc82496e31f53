"""The peer attention of OKDDip (Eq. 7): each auxiliary peer's weights over all peers."""

import math

import keras
from keras import layers, ops

from okddip_tf.errors import ConfigError
from okddip_tf.initializers import linear_initializers


@keras.saving.register_keras_serializable(package="okddip_tf")
class PeerAttention(layers.Layer):
    """Attention weights alpha [B, P, P] from the peers' pooled features h [B, P, D].

    alpha_ab = softmax_b( (W_L h_a) . (W_E h_b) ), self included, shared projections without bias
    and, as in the authors' code, no 1/sqrt(dim) scaling unless `scale=True`.

    Args:
      dim: the projection size (the authors use feature_dim // 8).
      scale: divide the energies by sqrt(dim), as in Transformer attention.
      projections: False fixes W_L = W_E = identity (the paper's "asymmetry" ablation, Table 5):
        alpha_ab = softmax_b(h_a . h_b), with no trainable weights and `dim` unused.
      init_std: W_L and W_E drawn from N(0, init_std) (the authors' branch-based VGG-16: 0.01);
        None: PyTorch's default U(+-1/sqrt(feature_dim)).
    """

    def __init__(self, dim, scale=False, projections=True, init_std=None, **kwargs):
        super().__init__(**kwargs)
        if dim < 1:
            raise ConfigError(f"attention dim must be >= 1, got {dim}.")
        self.dim = dim
        self.scale = scale
        self.projections = projections
        self.init_std = init_std

    def build(self, features_shape):
        feature_dim = features_shape[-1]
        if not self.projections:
            self.query = self.key = None
            self.energy_dim = feature_dim
            return
        self.energy_dim = self.dim
        # One initializer instance per weight: an unseeded Keras 3 initializer draws the same
        # values on every call, so a shared one would make W_L == W_E.
        self.query = layers.Dense(self.dim, use_bias=False, name="query", kernel_initializer=(
            linear_initializers(feature_dim, self.init_std)[0]))
        self.key = layers.Dense(self.dim, use_bias=False, name="key", kernel_initializer=(
            linear_initializers(feature_dim, self.init_std)[0]))
        self.query.build(features_shape)
        self.key.build(features_shape)

    def call(self, features):
        queries = self.query(features) if self.projections else features  # [B, P, dim]
        keys = self.key(features) if self.projections else features  # [B, P, dim]
        energy = ops.einsum("bid,bjd->bij", queries, keys)  # [B, P, P]
        if features.shape[1] == 1:
            # A single peer attends only to itself: the weight is 1 (softmax over one entry).
            return ops.ones_like(energy)
        if self.scale:
            energy = energy / math.sqrt(self.energy_dim)
        return ops.softmax(energy, axis=-1)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "scale": self.scale,
                "projections": self.projections, "init_std": self.init_std}


@keras.saving.register_keras_serializable(package="okddip_tf")
class RandomAttention(layers.Layer):
    """The paper's "w/o SA (random)" ablation (Table 5): random weights, new for every batch.

    One matrix per batch, shared by its samples: entries drawn from U(0, 1), each row divided by
    its sum, so every peer puts a random belief on every peer (itself included). It ignores the
    features and holds no trainable weights; its seed state is saved with the group.

    Args:
      seed: the seed of the draws (an int), or None for a random one.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, features):
        batch, num_peers = ops.shape(features)[0], features.shape[1]
        draws = keras.random.uniform((num_peers, num_peers), minval=1e-3, maxval=1.0,
                                     seed=self.seed_generator)
        rows = draws / ops.sum(draws, axis=-1, keepdims=True)
        return ops.broadcast_to(ops.cast(rows, features.dtype)[None], (batch, num_peers, num_peers))

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
