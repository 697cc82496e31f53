"""A user's model with its weights kept (from_keras(..., weights="keep")): the students start from
exactly the saved weights, the classifier is drawn afresh where it must be, frozen layers stay
frozen (frozen BatchNorm in inference mode), and a saved group needs nothing of the original.

The reference is the saved model itself: every comparison reads its weights back from the
`.keras` file and compares values exactly.
"""

import os

import keras
import numpy as np
import pytest
from keras import layers

from okddip_tf import GroupModel, builders, models, preflight, train
from okddip_tf.deploy import export
from okddip_tf.config import apply_smoke, get_base_config, validate_config
from okddip_tf.data.info import DatasetInfo
from okddip_tf.errors import ConfigError, MissingInputError
from okddip_tf.optim import CoupledSGD

SHAPE = (16, 16, 3)
FROZEN = ("stem_conv", "stem_bn")


def pretrained(num_classes=10, shape=SHAPE):
    """A small classifier whose weights (BatchNorm statistics included) are set to known values;
    its stem is frozen, its classifier's initializer has a fixed seed."""
    images = keras.Input(shape=shape, name="images")
    x = images
    for block, filters, strides, out in (("stem", 8, 1, "stem_relu"), ("mid", 8, 1, "mid_out"),
                                         ("top", 16, 2, "top_relu")):
        x = layers.Conv2D(filters, 3, strides=strides, padding="same", name=f"{block}_conv")(x)
        x = layers.ReLU(name=out)(layers.BatchNormalization(name=f"{block}_bn")(x))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions",
                           kernel_initializer=keras.initializers.GlorotUniform(seed=7))(x)
    model = keras.Model(images, outputs, name="pretrained_net")
    rng = np.random.default_rng(1)
    # Positive values everywhere keep the moving variances valid.
    model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32")
                       for w in model.get_weights()])
    for name in FROZEN:
        model.get_layer(name).trainable = False
    return model


@pytest.fixture(name="saved")
def fixture_saved(tmp_path):
    """(path of the saved model, {layer name: its saved weights})."""
    path = str(tmp_path / "pretrained.keras")
    pretrained().save(path)
    reference = keras.saving.load_model(path)
    return path, {layer.name: layer.get_weights() for layer in reference.layers if layer.weights}


def core(part):
    """The copy of the user's layers inside a student's trunk or head."""
    return next(layer for layer in part.layers if isinstance(layer, keras.Model))


def assert_layers_equal(model, reference, skip=()):
    compared = 0
    for layer in model.layers:
        if layer.weights and layer.name not in skip:
            for got, want in zip(layer.get_weights(), reference[layer.name], strict=True):
                np.testing.assert_array_equal(got, want)
            compared += 1
    assert compared, "nothing compared"


def images_and_labels(classes, batch=8, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (batch,) + SHAPE).astype("uint8"),
            rng.integers(0, classes, batch).astype("int32"))


@pytest.mark.parametrize("sharing", ["branch", "network"])
def test_students_start_from_the_saved_weights_with_a_new_classifier(saved, sharing):
    path, reference = saved
    backbone = models.from_keras(path, split_at="mid_out", num_classes=5)  # a file: keep
    group = GroupModel(backbone=backbone, num_classes=5, num_students=3, sharing=sharing,
                       image_shape=SHAPE)
    assert len(group.trunks) == (1 if sharing == "branch" else 3)
    for trunk in group.trunks:
        assert_layers_equal(core(trunk), reference)
        assert [l.name for l in core(trunk).layers if not l.trainable and l.weights] == \
            list(FROZEN)
    classifiers = []
    for head in group.heads:
        assert_layers_equal(core(head), reference, skip=("predictions",))
        classifier = core(head).get_layer("predictions")
        assert classifier.kernel.shape == (16, 5) and classifier.trainable
        classifiers.append(classifier.kernel.numpy())
    # Each student draws its own classifier, despite the initializer's fixed seed.
    assert not np.allclose(classifiers[0], classifiers[1])
    assert not np.allclose(classifiers[1], classifiers[2])


@pytest.mark.parametrize("method,sharing", [("okddip", "branch"), ("dml", "network")])
def test_the_deployed_student_is_the_saved_model_and_the_others_get_fresh_classifiers(
        saved, method, sharing):
    path, reference = saved
    model = keras.saving.load_model(path)
    backbone = models.from_keras(model, split_at="mid_out")  # a model object: keep
    assert backbone.get_config()["weights"] == "keep"
    group = GroupModel(backbone=backbone, num_classes=10, num_students=3, sharing=sharing,
                       method=method, image_shape=SHAPE)
    deployed = group.deployed_index
    for index, head in enumerate(group.heads):
        if index == deployed:
            assert_layers_equal(core(head), reference)
        else:
            assert_layers_equal(core(head), reference, skip=("predictions",))
            assert not np.allclose(core(head).get_layer("predictions").kernel.numpy(),
                                   reference["predictions"][0])
    images, _ = images_and_labels(10)
    normalized = (images.astype("float32") - np.float32(group.normalizer.mean)) / np.float32(
        group.normalizer.std)
    np.testing.assert_allclose(keras.ops.softmax(group.leader.predict(images, verbose=0)),
                               model.predict(normalized, verbose=0), atol=1e-6)


@pytest.mark.parametrize("sharing", ["branch", "network"])
def test_new_classifier_draws_every_students_classifier_for_as_many_new_classes(saved, sharing):
    """Fine-tuning on other classes, as many as before: the old scores mean nothing, so even the
    deployed student gets a fresh classifier; the rest stays the saved model's."""
    path, reference = saved
    backbone = models.from_keras(path, split_at="mid_out", num_classes=10, new_classifier=True)
    group = GroupModel(backbone=backbone, num_classes=10, num_students=3, sharing=sharing,
                       image_shape=SHAPE)
    for trunk in group.trunks:
        assert_layers_equal(core(trunk), reference)
    for head in group.heads:
        assert_layers_equal(core(head), reference, skip=("predictions",))
        classifier = core(head).get_layer("predictions")
        assert classifier.kernel.shape == (16, 10) and classifier.trainable
        assert not np.allclose(classifier.kernel.numpy(), reference["predictions"][0])
    # Saved and loaded, the group's config still asks for it (the architecture is rebuilt).
    assert group.backbone.get_config()["new_classifier"] is True


def test_frozen_layers_and_frozen_batchnorm_do_not_move_in_a_train_step(saved):
    path, reference = saved
    group = GroupModel(backbone=models.from_keras(path, split_at="mid_out", num_classes=5),
                       num_classes=5, num_students=3, image_shape=SHAPE)
    group.compile(optimizer=CoupledSGD(0.1, l2=1e-3), run_eagerly=True)
    group.train_on_batch(*images_and_labels(5))
    trunk = core(group.trunks[0])
    # Frozen: the kernel and BatchNorm's gamma, beta and moving statistics are as saved.
    assert_layers_equal(trunk, reference, skip=("mid_conv", "mid_bn"))
    # Not frozen: the kernels, and BatchNorm's moving mean (it ran in training mode).
    for name, weight in (("mid_conv", 0), ("mid_bn", 2)):
        assert not np.allclose(trunk.get_layer(name).get_weights()[weight],
                               reference[name][weight])
    for head in group.heads:
        assert not np.allclose(core(head).get_layer("top_bn").get_weights()[2],
                               reference["top_bn"][2])


def test_a_saved_keep_group_loads_and_trains_on_without_the_original_file(saved, tmp_path):
    path, reference = saved
    group = GroupModel(backbone=models.from_keras(path, split_at="mid_out", num_classes=5),
                       num_classes=5, num_students=3, image_shape=SHAPE)
    group.compile(optimizer=CoupledSGD(0.05), run_eagerly=True)
    images, labels = images_and_labels(5)
    group.train_on_batch(images, labels)
    checkpoint = str(tmp_path / "group.keras")
    group.save(checkpoint)
    os.remove(path)
    config = group.get_config()["backbone"]
    assert "pretrained.keras" not in str(config) and config["weights"] == "keep"
    loaded = keras.saving.load_model(checkpoint)
    np.testing.assert_allclose(loaded.predict(images, verbose=0),
                               group.predict(images, verbose=0), atol=1e-6)
    for before, after in zip(group.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(before.numpy(), after.numpy())
    assert [w.path for w in loaded.trainable_weights] == [w.path for w in group.trainable_weights]
    loaded.train_on_batch(images, labels)  # resumes, its compiled optimizer restored
    assert_layers_equal(core(loaded.trunks[0]), reference, skip=("mid_conv", "mid_bn"))


def test_weights_options_and_their_errors(saved):
    path, _ = saved
    assert models.from_keras(path, weights="fresh").get_config()["weights"] == "fresh"
    assert models.from_keras(pretrained).get_config()["weights"] == "fresh"  # a factory
    with pytest.raises(ValueError, match="weights must be 'keep' or 'fresh'"):
        models.from_keras(path, weights="pretrained")
    with pytest.raises(ConfigError, match="registered backbone 'resnet32'.*\\.keras file"):
        models.resolve_backbone("resnet32", weights="keep")
    with pytest.raises(MissingInputError, match="No model file 'nowhere.keras'"):
        models.from_keras("nowhere.keras")
    with pytest.raises(ValueError, match="pass num_classes=5 to from_keras"):
        GroupModel(backbone=models.from_keras(path), num_classes=5, image_shape=SHAPE)


def test_the_command_line_checks_an_own_model_before_loading_data(saved, monkeypatch):
    path, _ = saved
    monkeypatch.syspath_prepend(os.path.dirname(os.path.abspath(__file__)))
    config = apply_smoke(get_base_config())
    config.model.backbone = path
    preflight.check_model(config)  # a .keras file that is there
    config.model.backbone = "_user_model:build"
    preflight.check_model(config)  # a factory that imports (was refused as an unknown name)
    config.model.backbone = path[:-len(".keras")] + "_gone.keras"
    with pytest.raises(MissingInputError, match="No model file"):
        preflight.check_model(config)
    config.model.backbone, config.model.weights = "tiny", "keep"
    with pytest.raises(ConfigError, match="weights='keep'"):
        preflight.check_model(config)
    config.model.weights = "old"
    with pytest.raises(ConfigError, match="model.weights must be keep or fresh"):
        validate_config(config)


def test_the_config_builds_a_keras_file_backbone_for_the_datasets_classes(saved):
    path, reference = saved
    config = apply_smoke(get_base_config())
    config.model.backbone, config.model.split_at = path, "mid_out"
    info = DatasetInfo(name="t", num_classes=100, image_shape=SHAPE, class_names=None,
                       num_train_examples=1, num_eval_examples=1, pixel_mean=(0.0,) * 3,
                       pixel_std=(1.0,) * 3)
    backbone = builders.build_backbone(config, info)
    assert backbone.get_config()["weights"] == "keep"  # the default for a file
    head = backbone.build_head("head", 100, False, deployed=True)
    assert_layers_equal(core(head), reference, skip=("predictions",))
    assert core(head).get_layer("predictions").kernel.shape == (16, 100)
    config.model.weights = "fresh"
    head = builders.build_backbone(config, info).build_head("head", 100, False, deployed=True)
    assert not np.allclose(core(head).get_layer("top_conv").kernel.numpy(),
                           reference["top_conv"][0])


@pytest.mark.slow
def test_okddip_train_fine_tunes_a_keras_file_and_exports_without_it(tfds_data_dir, tmp_path):
    """--config.model.backbone=FILE.keras: kept weights, CIFAR-100's 100 classes replacing the
    file's 10; the run's checkpoint exports with the file gone. (Resuming rebuilds the group
    through the same builders as the factory run of test_keras_backbone.py, which resumes.)"""
    path = str(tmp_path / "pretrained32.keras")
    pretrained(shape=(32, 32, 3)).save(path)
    workdir = str(tmp_path / "run")
    config = apply_smoke(get_base_config())
    config.model.backbone, config.model.split_at = path, "mid_out"
    config.data.data_dir = tfds_data_dir
    config.data.train_examples, config.data.eval_examples = 128, 64
    config.train.epochs, config.train.verbose = 1, 0
    group, _, _ = train.train_and_evaluate(config, workdir)
    assert group.get_config()["backbone"]["weights"] == "keep"
    assert core(group.heads[0]).get_layer("predictions").kernel.shape == (16, 100)
    os.remove(path)
    report = export.export_workdir(workdir, formats=["saved_model"], representative_examples=0)
    assert report["parameters"]["leader"] == keras.Model.count_params(
        pretrained(100, (32, 32, 3)))
    assert report["artefacts"]["saved_model"]["max_abs_probability_diff"] < 1e-5
