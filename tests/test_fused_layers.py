"""The speed-only layer paths of the CIFAR ResNets compute what the plain Keras layers compute."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from okddip_tf import batchnorm
from okddip_tf.models import get_backbone
from okddip_tf.models import resnet_cifar


def make_pair(momentum=0.9, epsilon=1e-5):
    """(fused, plain) BatchNorm layers with the same random gamma, beta and moving statistics."""
    rng = np.random.default_rng(0)
    fused = batchnorm.BatchNormalization(momentum=momentum, epsilon=epsilon)
    plain = keras.layers.BatchNormalization(momentum=momentum, epsilon=epsilon)
    for layer in (fused, plain):
        layer.build((None, 5, 6, 3))
    weights = [rng.uniform(0.5, 2.0, 3), rng.normal(size=3), rng.normal(size=3),
               rng.uniform(0.5, 2.0, 3)]
    for layer in (fused, plain):
        layer.set_weights([w.astype("float32") for w in weights])
    return fused, plain


def test_fused_training_step_matches_keras_batchnorm():
    fused, plain = make_pair()
    x = tf.constant(np.random.default_rng(1).normal(2.0, 3.0, (4, 5, 6, 3)), tf.float32)
    results = []
    for layer in (fused, plain):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            # A loss that weights the outputs unevenly, so every gradient path is exercised.
            loss = tf.reduce_sum(y * tf.reshape(tf.range(360, dtype=tf.float32), y.shape) / 360)
        grads = tape.gradient(loss, [x] + layer.trainable_variables)
        results.append([y] + grads + [layer.moving_mean, layer.moving_variance])
    for got, want in zip(*results):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-5, atol=2e-5)
    # The reference itself: by default the biased batch variance goes into the moving average
    # (Keras' maths; PyTorch's unbiased update is the test below).
    values = x.numpy().reshape(-1, 3)
    initial, _ = make_pair()
    np.testing.assert_allclose(
        fused.moving_variance.numpy(),
        0.9 * initial.moving_variance.numpy() + 0.1 * values.var(axis=0), rtol=1e-5)
    np.testing.assert_allclose(
        fused.moving_mean.numpy(),
        0.9 * initial.moving_mean.numpy() + 0.1 * values.mean(axis=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 2, 1, 3), (2, 3)], ids=["fused", "unfused"])
def test_pytorch_style_moving_variance_is_the_unbiased_batch_variance(shape):
    """PyTorch's update: running_var <- (1 - 0.1) running_var + 0.1 var * n / (n - 1).

    n = 2 values per channel, where the unbiased variance is twice the biased one. The 4-D batch
    takes the fused kernel, the 2-D one (ONE's gate shape) the unfused path; both normalise with
    the biased variance, as PyTorch does.
    """
    layer = batchnorm.BatchNormalization(momentum=0.9, epsilon=1e-5,
                                         unbiased_moving_variance=True)
    layer.build((None,) + shape[1:])
    layer.moving_variance.assign(np.full(3, 0.5, "float32"))
    values = np.array([[1.0, -2.0, 0.5], [3.0, 4.0, -1.5]], "float32")
    x = tf.constant(values.reshape(shape))
    y = layer(x, training=True).numpy().reshape(2, 3)
    torch_momentum = 0.1  # torch.nn.BatchNorm2d's default, Keras' momentum 0.9
    want = (1 - torch_momentum) * 0.5 + torch_momentum * values.var(axis=0, ddof=1)
    np.testing.assert_allclose(layer.moving_variance.numpy(), want, rtol=1e-5)
    biased = (1 - torch_momentum) * 0.5 + torch_momentum * values.var(axis=0)
    assert np.all(np.abs(layer.moving_variance.numpy() - biased) > 0.05)  # a visible difference
    normalised = (values - values.mean(0)) / np.sqrt(values.var(axis=0) + 1e-5)
    np.testing.assert_allclose(y, normalised, rtol=1e-4, atol=1e-5)


def test_backbone_batchnorm_styles_choose_the_moving_variance():
    """`batchnorm="pytorch"` builds PyTorch's update, `"keras"` Keras' (biased) one."""
    from okddip_tf.models import common

    pytorch = common.batch_norm("a", common.NormSettings(style="pytorch"))
    keras_style = common.batch_norm("b", common.NormSettings(style="keras"))
    assert pytorch.unbiased_moving_variance and not keras_style.unbiased_moving_variance
    assert pytorch.get_config()["unbiased_moving_variance"] is True
    rebuilt = batchnorm.BatchNormalization.from_config(pytorch.get_config())
    assert rebuilt.unbiased_moving_variance


def test_fused_path_is_taken_in_training_and_not_in_inference():
    fused, _ = make_pair()
    x = tf.random.normal((2, 4, 4, 3))
    training = tf.function(lambda t: fused(t, training=True)).get_concrete_function(x)
    inference = tf.function(lambda t: fused(t, training=False)).get_concrete_function(x)
    op_types = lambda f: {op.type for op in f.graph.get_operations()}  # noqa: E731
    assert "FusedBatchNormV3" in op_types(training)
    assert "FusedBatchNormV3" not in op_types(inference)  # exports keep Keras' inference graph


def test_fused_layer_in_a_compiled_train_step_matches_plain_keras():
    """Two identical nets, one with each layer, trained 3 SGD steps: same weights after."""
    def net(bn):
        inputs = keras.Input((6, 6, 2))
        x = keras.layers.Conv2D(4, 3, padding="same", kernel_initializer="he_normal",
                                use_bias=False)(inputs)
        x = bn(momentum=0.9, epsilon=1e-5)(x)
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
        return keras.Model(inputs, keras.layers.Dense(3)(x))

    keras.utils.set_random_seed(3)
    fused = net(batchnorm.BatchNormalization)
    plain = net(keras.layers.BatchNormalization)
    plain.set_weights(fused.get_weights())
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(8, 6, 6, 2)).astype("float32"), rng.integers(0, 3, 8)
    for model in (fused, plain):
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    for got, want in zip(fused.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_fused_batchnorm_keeps_keras_weight_names_in_keras_files(tmp_path):
    """A .keras file written with Keras' layer loads into the fused one: same weight paths."""
    def net(bn):
        inputs = keras.Input((4, 4, 3))
        return keras.Model(inputs, bn()(inputs))

    plain = net(keras.layers.BatchNormalization)
    plain.set_weights([np.full(3, v, "float32") for v in (2.0, 1.0, 0.5, 3.0)])
    plain.save_weights(tmp_path / "plain.weights.h5")
    fused = net(batchnorm.BatchNormalization)
    fused.load_weights(tmp_path / "plain.weights.h5")
    for got, want in zip(fused.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("stride", [1, 2])
def test_resnet_conv_pads_symmetrically_like_pytorch(stride):
    """conv(): zero padding of 1 on every side then a valid 3x3 conv, at stride 1 and 2."""
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, resnet_cifar.conv(5, 3, stride, name=f"c{stride}")(inputs))
    conv_layer = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][0]
    x = tf.random.normal((2, 8, 8, 3), seed=4)
    y = model(x)
    want = tf.nn.conv2d(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), conv_layer.kernel,
                        strides=stride, padding="VALID")
    np.testing.assert_allclose(y.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)


def test_resnet32_parameter_counts_unchanged():
    """The paper-code counts: plain ResNet-32 for C=100 has 472,756 parameters (spec §2)."""
    spec = get_backbone("resnet32")
    trunk = spec.build_trunk("trunk", False)
    head = spec.build_head("head", 100, False)
    count = sum(int(np.prod(v.shape)) for m in (trunk, head) for v in m.trainable_variables)
    assert count == 472_756
