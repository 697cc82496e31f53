"""PeerAttention and the group's attention outputs against NumPy (spec §2 Attention, decision 4)."""

import math

import keras
import numpy as np
import pytest
from keras import ops

import okddip_tf
from okddip_tf.methods.attention import PeerAttention
from okddip_tf.models import get_backbone


def np_softmax(x, axis=-1):
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def np_attention(features, w_query, w_key, scale=False):
    """alpha[i, a, b] = softmax_b((h_a Wq) . (h_b Wk)), computed per sample with plain matmuls."""
    features = np.asarray(features, dtype=np.float64)
    out = []
    for h in features:  # h: [P, D]
        energy = (h @ w_query) @ (h @ w_key).T  # [P, P]
        if scale:
            energy = energy / math.sqrt(w_query.shape[1])
        out.append(np_softmax(energy, axis=-1))
    return np.stack(out)


def kernels(layer):
    return (ops.convert_to_numpy(layer.query.kernel).astype(np.float64),
            ops.convert_to_numpy(layer.key.kernel).astype(np.float64))


@pytest.mark.parametrize("scale", [False, True])
@pytest.mark.parametrize("num_peers,feature_dim,dim", [(2, 16, 2), (3, 64, 8), (5, 32, 4)])
def test_peer_attention_matches_numpy(num_peers, feature_dim, dim, scale):
    keras.utils.set_random_seed(num_peers)
    rng = np.random.default_rng(feature_dim + num_peers)
    features = rng.normal(size=(6, num_peers, feature_dim)).astype(np.float32)
    layer = PeerAttention(dim, scale=scale)
    got = ops.convert_to_numpy(layer(features))
    w_query, w_key = kernels(layer)
    assert w_query.shape == (feature_dim, dim) and w_key.shape == (feature_dim, dim)
    assert got.shape == (6, num_peers, num_peers)
    np.testing.assert_allclose(got, np_attention(features, w_query, w_key, scale), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=-1), 1.0, rtol=1e-6)
    assert (got > 0).all()
    assert not layer.query.use_bias and not layer.key.use_bias


def test_scaling_is_off_by_default_and_changes_the_weights():
    """The default (no 1/sqrt(dim)) must differ from the scaled form, or the test above is blind."""
    rng = np.random.default_rng(0)
    features = rng.normal(scale=3.0, size=(4, 3, 16)).astype(np.float32)
    layer = PeerAttention(8)
    unscaled = ops.convert_to_numpy(layer(features))
    w_query, w_key = kernels(layer)
    assert layer.scale is False
    np.testing.assert_allclose(unscaled, np_attention(features, w_query, w_key, scale=False),
                               rtol=1e-5, atol=1e-6)
    scaled_reference = np_attention(features, w_query, w_key, scale=True)
    assert np.abs(unscaled - scaled_reference).max() > 1e-3


def test_self_is_included():
    """A peer whose projected query aligns with its own key gets weight on itself (the diagonal)."""
    layer = PeerAttention(2)
    layer.build((None, 2, 2))
    layer.query.kernel.assign(np.eye(2, dtype=np.float32) * 10)
    layer.key.kernel.assign(np.eye(2, dtype=np.float32))
    features = np.array([[[1.0, 0.0], [0.0, 1.0]]], dtype=np.float32)
    got = ops.convert_to_numpy(layer(features))[0]
    # energy = 10 * I: each row puts almost all its weight on the diagonal.
    np.testing.assert_allclose(np.diag(got), 1 / (1 + np.exp(-10.0)), rtol=1e-5)


@pytest.mark.parametrize("feature_dim", [16, 64, 256])
def test_default_init_is_torch_linear_uniform(feature_dim):
    keras.utils.set_random_seed(1)
    layer = PeerAttention(max(1, feature_dim // 8))
    layer.build((None, 3, feature_dim))
    limit = 1.0 / math.sqrt(feature_dim)
    for kernel in kernels(layer):
        assert np.abs(kernel).max() <= limit + 1e-7
        # Uniform over the whole interval, not a narrower init (e.g. Glorot for large fan-out).
        assert np.abs(kernel).max() > 0.8 * limit
        assert abs(kernel.mean()) < 0.5 * limit


def test_dim_must_be_positive():
    with pytest.raises(ValueError):
        PeerAttention(0)


def test_config_round_trip():
    layer = PeerAttention(5, scale=True)
    clone = PeerAttention.from_config(layer.get_config())
    assert clone.dim == 5 and clone.scale is True


# The group model's attention outputs.

@pytest.fixture(scope="module")
def tiny_group():
    keras.utils.set_random_seed(3)
    return okddip_tf.GroupModel(backbone="tiny", num_classes=10, num_students=4,
                                image_shape=(32, 32, 3))


def test_group_attention_is_that_of_the_peers_pooled_features(tiny_group):
    group = tiny_group
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    outputs = group(images, training=False)
    trunk_out = group.trunks[0](group.normalizer(images), training=False)
    features = np.stack([ops.convert_to_numpy(group.heads[i](trunk_out, training=False)[0])
                         for i in range(group.num_peers)], axis=1)  # [B, P, D], leader excluded
    assert features.shape == (5, 3, get_backbone("tiny").feature_dim)
    w_query, w_key = kernels(group.attention)
    attention = ops.convert_to_numpy(outputs["attention"])
    assert attention.shape == (5, 3, 3)
    np.testing.assert_allclose(attention, np_attention(features, w_query, w_key), rtol=1e-4,
                               atol=1e-6)
    peer_logits = ops.convert_to_numpy(outputs["peer_logits"])
    np.testing.assert_allclose(ops.convert_to_numpy(outputs["peer_targets"]),
                               np.einsum("bij,bjc->bic", attention, peer_logits), rtol=1e-5,
                               atol=1e-5)
    # The features really do differ between peers, so the attention is not trivially uniform.
    assert np.abs(features[:, 0] - features[:, 1]).max() > 1e-4


def test_default_attention_dims():
    assert get_backbone("resnet32").feature_dim == 64
    assert get_backbone("tiny").feature_dim == 16
    tiny = okddip_tf.GroupModel(backbone="tiny", num_classes=10, num_students=4,
                                image_shape=(32, 32, 3))
    assert tiny.method.attention_dim == 16 // 8 == 2
    assert tuple(tiny.attention.query.kernel.shape) == (16, 2)
    resnet32 = okddip_tf.GroupModel(backbone="resnet32", num_classes=10, num_students=4,
                                    image_shape=(32, 32, 3))
    assert resnet32.method.attention_dim == 64 // 8 == 8
    assert tuple(resnet32.attention.query.kernel.shape) == (64, 8)
    assert tuple(resnet32.attention.key.kernel.shape) == (64, 8)
    # W_L and W_E together add 2 * 64 * 8 = 1,024 parameters (spec §2).
    assert sum(int(np.prod(v.shape)) for v in resnet32.attention.trainable_variables) == 1024


def test_attention_scale_reaches_the_layer():
    group = okddip_tf.GroupModel(backbone="tiny", num_classes=10, num_students=3,
                                 image_shape=(32, 32, 3),
                                 method_options={"attention_scale": True, "attention_dim": 4})
    assert group.attention.scale is True and group.attention.dim == 4


# Regression: Keras 3 initializers without a seed return identical values each time one instance
# is called. A shared instance made W_L == W_E, and (in resnet_cifar) every student's head, and
# every same-shaped conv, identical at init, so the peers' features were equal and the attention
# exactly uniform at step 0.

def test_query_and_key_start_different():
    layer = PeerAttention(8)
    layer.build((None, 3, 64))
    w_query, w_key = kernels(layer)
    assert np.abs(w_query - w_key).max() > 1e-3


def test_students_start_from_different_weights(tiny_group):
    group = tiny_group
    for a in range(1, group.num_students):
        for v0, va in zip(group.heads[0].trainable_variables, group.heads[a].trainable_variables):
            if "kernel" in v0.path:  # BN gamma/beta start at 1/0 in every head, as in PyTorch.
                assert np.abs(ops.convert_to_numpy(v0) - ops.convert_to_numpy(va)).max() > 1e-4, (
                    f"head {a} {va.path} equals head 0's at init")


def test_same_shaped_convs_start_different():
    group = okddip_tf.GroupModel(backbone="resnet20", num_classes=10, num_students=2,
                                 image_shape=(32, 32, 3))
    kernels_ = [ops.convert_to_numpy(v) for v in group.trunks[0].trainable_variables
                if "stage1" in v.path and "kernel" in v.path]
    assert len(kernels_) == 6
    for i in range(len(kernels_)):
        for j in range(i + 1, len(kernels_)):
            assert np.abs(kernels_[i] - kernels_[j]).max() > 1e-4
