"""The user's own Keras model as a backbone (okddip_tf.models.from_keras).

Models: a hand-written functional network (tests/_user_model.py, with a residual connection and
a softmax classifier) and two keras.applications networks with weights=None on 32x32 inputs:
MobileNetV3Small (built-in preprocessing, softmax layer at the end) and MobileNetV2 at width
0.35 (no preprocessing, softmax activation on its Dense classifier).
"""

import json
import os
import pathlib
import sys

import keras
import numpy as np
import pytest

from okddip_tf import GroupModel, models, train
from okddip_tf.deploy import export
from okddip_tf.config import apply_smoke, get_base_config
from okddip_tf.optim import CoupledSGD

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _user_model  # noqa: E402  pylint: disable=wrong-import-position

sys.path.remove(str(HERE))
M = 4


def num_trainable(model):
    return int(sum(np.prod(v.shape) for v in model.trainable_weights))


def images_and_labels(shape, batch=4, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (batch,) + shape).astype("uint8"),
            rng.integers(0, classes, batch).astype("int32"))


def count(model, names):
    return sum(num_trainable(model.get_layer(name)) for name in names)


def test_hand_written_model_counts_split_and_logits():
    user = _user_model.build(num_classes=10)
    backbone = models.from_keras(user, split_at="block2_out")
    assert (backbone.trunk_channels, backbone.feature_dim, backbone.raw_pixels) == (8, 16, False)
    keras.utils.set_random_seed(0)
    group = GroupModel(backbone=backbone, num_classes=10, num_students=M, image_shape=(16, 16, 3))
    plain = num_trainable(user)
    head = count(user, ["block3_conv", "predictions"])
    assert num_trainable(group.leader) == plain
    assert num_trainable(group) == plain + (M - 1) * head + 2 * 16 * 2  # W_L, W_E: 16 -> 2
    # The leader outputs logits: the classifier's softmax is removed, so its softmax reproduces
    # the user's architecture when given the same weights.
    clone = keras.models.clone_model(user)
    leader_layers = {layer.name: layer for model in (group.trunks[-1], group.heads[-1])
                     for sub in model.layers if isinstance(sub, keras.Model)
                     for layer in sub.layers}
    for layer in clone.layers:
        if layer.weights:
            layer.set_weights(leader_layers[layer.name].get_weights())
    images, _ = images_and_labels((16, 16, 3))
    normalized = (images.astype("float32") - np.float32(group.normalizer.mean)) / np.float32(
        group.normalizer.std)
    logits = group.leader.predict(images, verbose=0)
    probabilities = clone.predict(normalized, verbose=0)
    np.testing.assert_allclose(keras.ops.softmax(logits).numpy(), probabilities, atol=1e-5)


def test_unsplittable_models_get_clear_errors():
    user = _user_model.build()
    with pytest.raises(ValueError, match=r"cannot be split at layer 'block2_conv1'.*"
                                         r"skip connection.*'block2_out'"):
        models.from_keras(user, split_at="block2_conv1")
    with pytest.raises(ValueError, match="has no layer 'nope'"):
        models.from_keras(user, split_at="nope")

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed model"):
        models.from_keras(Subclassed())
    with pytest.raises(ValueError, match="outputs 10 classes but the group has num_classes=5"):
        GroupModel(backbone=models.from_keras(user), num_classes=5, image_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="Cannot import 'no_such_module'"):
        models.from_keras("no_such_module:build")


def test_network_copies_are_fresh_and_default_split_shares_all_but_the_classifier():
    user = _user_model.build()
    backbone = models.from_keras(user, weights="fresh")  # split right before the classifier
    assert backbone.get_config()["split_at"] == "pool"
    keras.utils.set_random_seed(0)
    group = GroupModel(backbone=backbone, num_classes=10, num_students=3, sharing="network",
                       image_shape=(16, 16, 3))
    kernels = [trunk.layers[-1].get_layer("block1_conv").kernel.numpy() for trunk in group.trunks]
    assert not np.allclose(kernels[0], kernels[1]) and not np.allclose(kernels[1], kernels[2])
    assert not np.allclose(kernels[0], user.get_layer("block1_conv").kernel.numpy())
    branch = GroupModel(backbone=backbone, num_classes=10, num_students=3, image_shape=(16, 16, 3))
    assert num_trainable(branch) == num_trainable(user) + 2 * count(user, ["predictions"]) + 2 * 16 * 2


def train_save_load(group, shape, tmp_path):
    images, labels = images_and_labels(shape)
    group.compile(optimizer=CoupledSGD(0.01), run_eagerly=True)
    before = [v.numpy().copy() for v in group.trainable_weights]
    logs = group.train_on_batch(images, labels, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, group.trainable_weights))
    path = str(tmp_path / "group.keras")
    group.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), group.predict(images, verbose=0),
                               atol=1e-5)
    assert num_trainable(loaded) == num_trainable(group)
    return loaded


@pytest.mark.parametrize("application,kwargs,split_at,raw_pixels", [
    ("MobileNetV3Small", dict(minimalistic=True), "expanded_conv_10_add", True),
    pytest.param("MobileNetV2", dict(alpha=0.35), "block_13_expand_relu", False,
                 marks=pytest.mark.slow),
])
def test_keras_applications_train_save_and_load(application, kwargs, split_at, raw_pixels,
                                                tmp_path):
    shape = (32, 32, 3)
    base = getattr(keras.applications, application)(weights=None, input_shape=shape, classes=10,
                                                    **kwargs)
    backbone = models.from_keras(base, split_at=split_at)
    assert backbone.raw_pixels is raw_pixels
    keras.utils.set_random_seed(0)
    group = GroupModel(backbone=backbone, num_classes=10, num_students=3, image_shape=shape)
    assert num_trainable(group.leader) == num_trainable(base)
    # The model's own Rescaling layer normalises: the group passes raw pixels, with no layer
    # of its own before the model; other image models get the group's pixel normalisation.
    assert (group.normalizer is None) is raw_pixels
    train_save_load(group, shape, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("application,kwargs", [
    ("MobileNetV3Small", dict(minimalistic=True)), ("MobileNetV2", dict(alpha=0.35))])
def test_keras_applications_leader_exports_with_parity(application, kwargs, tmp_path):
    shape = (32, 32, 3)
    base = getattr(keras.applications, application)(weights=None, input_shape=shape, classes=10,
                                                    **kwargs)
    group = GroupModel(backbone=models.from_keras(base), num_classes=10, num_students=3,
                       image_shape=shape)
    images, labels = images_and_labels(shape, batch=32)
    report = export.export_leader(group, str(tmp_path), formats=["saved_model", "float32"],
                                  eval_images=images, eval_labels=labels)
    assert report["parameters"]["leader"] == base.count_params()
    assert report["artefacts"]["saved_model"]["max_abs_probability_diff"] < 1e-5
    assert report["artefacts"]["float32"]["max_abs_probability_diff"] < 1e-4


def smoke_config(data_dir, backbone):
    config = apply_smoke(get_base_config())
    config.model.backbone, config.model.split_at = backbone, "block2_out"
    config.data.data_dir = data_dir
    config.data.train_examples, config.data.eval_examples = 128, 64
    config.train.epochs, config.train.verbose = 1, 0
    return config


def test_cli_factory_trains_resumes_and_exports_without_the_users_code(tfds_data_dir, tmp_path,
                                                                     monkeypatch):
    """--config.model.backbone=module:factory trains; export runs with the module unimportable."""
    monkeypatch.syspath_prepend(str(HERE))
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(smoke_config(tfds_data_dir, "_user_model:build"), workdir)
    config = smoke_config(tfds_data_dir, "_user_model:build")
    config.train.epochs = 2  # the same command with more epochs continues the run
    train.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "history.json")) as f:
        assert len(json.load(f)["loss"]) == 2
    # Nothing of the user's code is needed from here on.
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "_user_model", None)  # importing it now fails
    report = export.export_workdir(workdir, formats=["saved_model", "float32"],
                                   representative_examples=0)
    assert report["source"]["backbone"] == "user_net"
    assert report["artefacts"]["saved_model"]["max_abs_probability_diff"] < 1e-5
    assert report["artefacts"]["float32"]["max_abs_probability_diff"] < 1e-4
    plain = keras.Model.count_params(_user_model.build(100, (32, 32, 3)))
    assert report["parameters"] == {"leader": plain, "single_network": plain}
