"""keras-hub models as backbones, built from their arguments (no preset is downloaded).

keras-hub is in the `test` extra (BUILD.md): a missing keras_hub fails this file, it does not
skip it. The ResNet is as small as keras-hub's ResNetBackbone allows (its first stack must have
64 filters, as the stem feeding it).
"""

import keras
import keras_hub
import numpy as np
import pytest

from okddip_tf import GroupModel, models
from okddip_tf.optim import CoupledSGD

SHAPE = (32, 32, 3)


def tiny_resnet():
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        image_shape=SHAPE)


def images_and_labels(classes, batch=4, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (batch,) + SHAPE).astype("uint8"),
            rng.integers(0, classes, batch).astype("int32"))


def train_step_moves_weights(group, classes):
    group.compile(optimizer=CoupledSGD(0.05), run_eagerly=True)
    before = [v.numpy().copy() for v in group.trainable_weights]
    logs = group.train_on_batch(*images_and_labels(classes), return_dict=True)
    assert np.isfinite(logs["loss"])
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, group.trainable_weights))


def test_a_classifier_on_a_keras_hub_backbone_splits_inside_it_and_trains():
    backbone = tiny_resnet()
    features = keras.layers.GlobalAveragePooling2D(name="pool")(backbone.output)
    logits = keras.layers.Dense(10, name="predictions")(features)
    model = keras.Model(backbone.input, logits, name="hub_resnet_classifier")
    spec = models.from_keras(model, split_at="stack0_block0_out", weights="fresh")
    group = GroupModel(backbone=spec, num_classes=10, num_students=3, image_shape=SHAPE)
    leader_count = sum(int(np.prod(v.shape)) for v in group.leader.trainable_weights)
    assert leader_count == sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    # Each student owns the second stack: the group holds three copies of its kernel.
    kernels = [w for w in group.trainable_weights if w.path.endswith("stack1_block0_2_conv/kernel")]
    assert len(kernels) == 3
    train_step_moves_weights(group, 10)


def test_a_keras_hub_image_classifier_keeps_its_frozen_pretrained_backbone(tmp_path):
    backbone = tiny_resnet()
    classifier = keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=10,
                                                        activation="softmax")
    rng = np.random.default_rng(0)
    classifier.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32")
                            for w in classifier.get_weights()])
    backbone.trainable = False  # fine-tune the head only
    saved = [w.copy() for w in backbone.get_weights()]
    spec = models.from_keras(classifier, num_classes=5)  # keep; split before the classifier
    group = GroupModel(backbone=spec, num_classes=5, num_students=3, image_shape=SHAPE)
    trunk = group.trunks[0].layers[-1].get_layer(backbone.name)
    for got, want in zip(trunk.get_weights(), saved, strict=True):
        np.testing.assert_array_equal(got, want)
    assert not trunk.trainable_weights
    train_step_moves_weights(group, 5)
    # Frozen, BatchNorm included: the step left the backbone as it was.
    for got, want in zip(trunk.get_weights(), saved, strict=True):
        np.testing.assert_array_equal(got, want)
    path = str(tmp_path / "group.keras")
    group.save(path)
    loaded = keras.saving.load_model(path)
    images, _ = images_and_labels(5)
    np.testing.assert_allclose(loaded.predict(images, verbose=0),
                               group.predict(images, verbose=0), atol=1e-5)
    assert len(loaded.trainable_weights) == len(group.trainable_weights)


def test_keras_hub_models_that_cannot_be_split_there_say_what_to_do():
    backbone = tiny_resnet()
    classifier = keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=10)
    with pytest.raises(ValueError, match=rf"'stack0_block0_out' \(split_at\) is inside the nested "
                                         rf"model '{backbone.name}'.*keras.Model\(inner.input"):
        models.from_keras(classifier, split_at="stack0_block0_out")

    class Wrapped(keras.Model):  # a subclassed model around a keras-hub backbone
        def __init__(self):
            super().__init__()
            self.backbone = backbone
            self.head = keras.layers.Dense(10)

        def call(self, images):
            return self.head(keras.ops.mean(self.backbone(images), axis=(1, 2)))

    with pytest.raises(ValueError, match=rf"subclassed model.*holds the functional model\(s\) "
                                         rf"\['{backbone.name}'\].*keras.Model\(inner.input"):
        models.from_keras(Wrapped())
