"""Groups of non-image backbones: token ids and feature vectors train, save, load, resume and
export (SavedModel and TFLite, agreeing with the Keras leader); the input spec's checks."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import okddip_tf
from okddip_tf import builders, config as config_module, data, inputs, models
from okddip_tf.data.info import DatasetInfo
from okddip_tf.deploy import export, savedmodel, tflite
from okddip_tf.errors import ConfigError
from okddip_tf.group import GroupModel

VOCAB, LENGTH, FEATURES, CLASSES = 40, 16, 12, 4
# The learning test's threshold on the leader's held-out accuracy (chance 0.25): every seed
# benchmarks/token_learning.py ran reached 1.0 (benchmarks/results/token_learning.json).
LEARNED_ACCURACY = 0.9
# Agreement with the Keras leader's logits (max |difference|), asserted below: the SavedModel
# runs the same TensorFlow graph, float32 TFLite the same maths in another runtime.
SAVED_MODEL_ATOL, FLOAT32_TFLITE_ATOL = 1e-5, 1e-4

# Loads a SavedModel where okddip_tf and Keras cannot be imported and runs its signature on
# the inputs in a .npy file; prints the input signature and writes the outputs.
FRESH_PROCESS = """
import json, sys
sys.modules["okddip_tf"] = None
sys.modules["keras"] = None
import numpy as np
import tensorflow as tf

directory, inputs_file, outputs_file = sys.argv[1:]
serving = tf.saved_model.load(directory).signatures["serving_default"]
(name, spec), = serving.structured_input_signature[1].items()
out = serving(**{name: tf.constant(np.load(inputs_file))})
np.savez(outputs_file, **{key: value.numpy() for key, value in out.items() if key != "class_names"})
print(json.dumps({"name": name, "dtype": spec.dtype.name, "shape": spec.shape.as_list()}))
"""


def token_classifier():
    """Embedding + average pooling + Dense: a bag-of-words text classifier."""
    token_ids = keras.Input((LENGTH,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, 16, name="embed")(token_ids)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    x = keras.layers.Dense(32, activation="relu", name="hidden")(x)
    return keras.Model(token_ids, keras.layers.Dense(CLASSES, name="classify")(x))


def feature_classifier():
    """An MLP on tabular feature vectors."""
    features = keras.Input((FEATURES,))
    x = keras.layers.Dense(32, activation="relu", name="dense_1")(features)
    x = keras.layers.Dense(32, activation="relu", name="dense_2")(x)
    return keras.Model(features, keras.layers.Dense(CLASSES, name="classify")(x))


def marker_task(count, seed):
    return data.marker_tokens(count, num_classes=CLASSES, vocabulary_size=VOCAB, length=LENGTH,
                              seed=seed)


def feature_task(count, seed):
    """Feature vectors labelled by which of the first 4 features is largest."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((count, FEATURES)).astype(np.float32)
    return features, features[:, :CLASSES].argmax(-1).astype(np.int32)


KINDS = {"tokens": (token_classifier, marker_task, "token_ids", "int32", LENGTH),
         "features": (feature_classifier, feature_task, "features", "float32", FEATURES)}


def build_group(kind, seed=0):
    keras.utils.set_random_seed(seed)
    group = GroupModel(backbone=models.from_keras(KINDS[kind][0]()), num_classes=CLASSES,
                       num_students=3)
    group.compile(optimizer=keras.optimizers.Adam(1e-2))
    return group


def leader_logits(group, values):
    return np.asarray(group.leader.predict(values, verbose=0))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_group_trains_saves_loads_resumes_and_exports(kind, tmp_path):
    _, task, name, dtype, width = KINDS[kind]
    x, y = task(256, seed=1)
    x_test, y_test = task(128, seed=2)
    group = build_group(kind)
    spec = group.example_spec
    assert (spec.name, spec.dtype, spec.shape) == (name, dtype, (width,))
    assert group.normalizer is None  # only image groups normalise pixels
    leader_input = group.leader.inputs[0]
    assert (leader_input.name, leader_input.dtype, tuple(leader_input.shape)) == (
        name, dtype, (None, width))

    before = [np.array(w) for w in group.trainable_weights]
    history = group.fit(data.make_dataset(x, y, num_classes=CLASSES, batch_size=32,
                                          training=True, seed=0), epochs=2, verbose=0,
                        shuffle=False, callbacks=[okddip_tf.DistillWeightRampup(length=2)])
    assert all(np.isfinite(history.history["loss"]))
    assert any(not np.array_equal(b, np.asarray(a))
               for b, a in zip(before, group.trainable_weights))

    # Save and load: the same outputs, the same input spec.
    path = tmp_path / f"{kind}.keras"
    group.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.example_spec == spec
    for key, value in group(x_test[:16]).items():
        np.testing.assert_allclose(np.asarray(loaded(x_test[:16])[key]), np.asarray(value),
                                   rtol=1e-6, atol=1e-6)

    # Resume: the loaded group continues with the saved optimizer state, so one more epoch on
    # the same batches gives the weights the original group reaches.
    assert int(loaded.optimizer.iterations) == int(group.optimizer.iterations) == 16
    for model in (group, loaded):
        model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    assert int(loaded.optimizer.iterations) == 24
    for original, resumed in zip(group.weights, loaded.weights):
        np.testing.assert_allclose(np.asarray(resumed), np.asarray(original), rtol=1e-5,
                                   atol=1e-6)

    # Export as `okddip export --checkpoint=... --examples=...` does: the leader's own input.
    loaded.save(path)
    examples = tmp_path / "examples.npz"
    np.savez(examples, inputs=x_test, labels=y_test)
    report = export.export_workdir(checkpoint=str(path), examples=str(examples),
                                   representative_examples=64)
    directory = report["directory"]
    assert report["input"]["name"] == name and "image_shape" not in report
    assert report["signatures"] == {"serving_default": f"{name} {dtype} [batch, {width}]"}
    expected = leader_logits(loaded, x_test)
    saved = savedmodel.predict(directory, x_test)
    np.testing.assert_allclose(saved["logits"], expected, atol=SAVED_MODEL_ATOL, rtol=0)
    np.testing.assert_array_equal(saved["class_ids"], expected.argmax(-1))
    probabilities = np.exp(expected) / np.exp(expected).sum(-1, keepdims=True)
    np.testing.assert_allclose(saved["probabilities"], probabilities, atol=SAVED_MODEL_ATOL)
    float32 = tflite.TFLiteClassifier(f"{directory}/leader_float32.tflite")
    assert float32.input_name == name and float32.input_dtype == np.dtype(dtype)
    np.testing.assert_allclose(float32.predict(x_test)["logits"], expected,
                               atol=FLOAT32_TFLITE_ATOL, rtol=0)
    int8 = tflite.TFLiteClassifier(f"{directory}/leader_int8.tflite")
    # Token ids stay int32 (they index the embedding); features go in as float32.
    assert int8.input_dtype == np.dtype(dtype) and report["artefacts"]["int8"]["input_dtype"] \
        == dtype
    artefacts = report["artefacts"]
    assert artefacts["int8"]["size_bytes"] < artefacts["float32"]["size_bytes"]
    assert artefacts["float32"]["top1_agreement"] == 1.0
    assert artefacts["int8"]["top1_agreement"] >= 0.9
    with pytest.raises(ValueError, match=rf"Expected {name} of shape \[batch, {width}\]"):
        float32(x_test[:, :width - 1])

    # The SavedModel needs neither okddip_tf nor Keras.
    np.save(tmp_path / "inputs.npy", x_test[:8])
    result = subprocess.run([sys.executable, "-I", "-c", FRESH_PROCESS, directory,
                             str(tmp_path / "inputs.npy"), str(tmp_path / "outputs.npz")],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {"name": name, "dtype": dtype, "shape": [None, width]}
    outputs = np.load(tmp_path / "outputs.npz")
    np.testing.assert_allclose(outputs["logits"], expected[:8], atol=SAVED_MODEL_ATOL, rtol=0)
    np.testing.assert_array_equal(outputs["class_ids"], expected[:8].argmax(-1))


def learn_marker_rule(seed):
    """Trains a token-id OKDDip group on the marker task (`data.marker_tokens`: 1,024 training
    sequences, 4 epochs of batch 64, Adam 1e-2, ramp-up over 2 epochs) and returns its leader's
    accuracy on 512 held-out sequences. benchmarks/token_learning.py runs it for other seeds."""
    x, y = marker_task(1024, seed=1000 + seed)
    x_test, y_test = marker_task(512, seed=2000 + seed)
    group = build_group("tokens", seed=seed)
    group.fit(x, y, batch_size=64, epochs=4, verbose=0,
              callbacks=[okddip_tf.DistillWeightRampup(length=2)])
    return float(np.mean(leader_logits(group, x_test).argmax(-1) == y_test))


def test_token_group_learns_the_marker_rule():
    """A small text classifier trained as an OKDDip group learns a rule from token ids: its
    leader's held-out accuracy is far above chance (25%); see LEARNED_ACCURACY."""
    accuracy = learn_marker_rule(seed=0)
    assert accuracy >= LEARNED_ACCURACY, accuracy


def test_the_group_checks_its_input_against_the_spec():
    group = GroupModel(backbone=models.from_keras(token_classifier()), num_classes=CLASSES,
                       num_students=2, method="dml", sharing="network")
    ids = np.zeros((2, LENGTH), np.int32)
    assert group(ids)["leader_logits"].shape == (2, CLASSES)
    assert group(ids.astype(np.int64))["leader_logits"].shape == (2, CLASSES)
    cases = {
        "rank": (np.zeros((2, LENGTH, 1), np.int32), r"token_ids int32 \[batch, 16\] \(rank 2\)"),
        "length": (np.zeros((2, LENGTH + 1), np.int32),
                   r"axis 1 must be 16, got shape \[2, 17\].*Pad or truncate"),
        "dtype": (np.zeros((2, LENGTH), np.float32), r"got shape \[2, 16\] and dtype float32.*"
                  r"integers.*astype\('int32'\)"),
    }
    for value, match in cases.values():
        with pytest.raises(ValueError, match=match):
            group(value)
    with pytest.raises(ValueError, match=r"image_shape=\(32, 32, 3\) is for image backbones; "
                                         r"'functional.*' takes token_ids int32 \[batch, 16\]"):
        GroupModel(backbone=models.from_keras(token_classifier()), num_classes=CLASSES,
                   num_students=2, image_shape=(32, 32, 3))


def test_from_keras_takes_the_input_spec_from_the_model():
    assert models.from_keras(token_classifier()).inputs() == inputs.InputSpec(
        (LENGTH,), "int32", kind="tokens", value_range=(0, VOCAB))
    # An Embedding's input holds ids whatever the declared dtype.
    float_ids = keras.Input((LENGTH,))
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(VOCAB, 4)(float_ids))
    spec = models.from_keras(keras.Model(float_ids, keras.layers.Dense(3)(x))).inputs()
    assert (spec.kind, spec.dtype, spec.name) == ("tokens", "int32", "token_ids")
    spec = models.from_keras(feature_classifier()).inputs()
    assert (spec.kind, spec.dtype, spec.shape, spec.name) == (
        "features", "float32", (FEATURES,), "features")
    frames = keras.Input((10, 6))
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Conv1D(8, 3)(frames))
    spec = models.from_keras(keras.Model(frames, keras.layers.Dense(3)(x))).inputs()
    assert (spec.kind, spec.shape, spec.name) == ("frames", (10, 6), "frames")
    gray = keras.Input((20, 20, 1))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(gray))
    backbone = models.from_keras(keras.Model(gray, keras.layers.Dense(3)(x)))
    assert backbone.inputs() == inputs.image_spec((20, 20, 1))
    group = GroupModel(backbone=backbone, num_classes=3, num_students=2, method="dml",
                       pixel_mean=(120.0,), pixel_std=(60.0,))
    assert group.normalizer is not None and group.image_shape == (20, 20, 1)


def test_input_spec_config_round_trip_and_description():
    spec = inputs.InputSpec((LENGTH,), "int32", kind="tokens", value_range=(0, VOCAB))
    assert inputs.spec_from(json.loads(json.dumps(spec.get_config()))) == spec
    assert spec.describe() == "token_ids int32 [batch, 16]"
    assert inputs.image_spec().describe() == "images float32 [batch, ?, ?, 3]"
    with pytest.raises(ValueError, match="Unknown input kind 'text'"):
        inputs.InputSpec((3,), kind="text")
    with pytest.raises(ValueError, match="numbers are needed"):
        inputs.InputSpec((3,)).check((2, 3), tf.string)


def test_make_dataset_batches_token_ids_and_features_without_image_augmentation():
    x, y = marker_task(10, seed=0)
    batches = list(data.make_dataset(x, y, num_classes=CLASSES, batch_size=4, training=True,
                                     seed=0).as_numpy_iterator())
    assert len(batches) == 2 and batches[0][0].dtype == np.int32
    seen = np.concatenate([b[0] for b in batches])
    # Shuffled whole rows, never cropped or flipped: every batch row is one of the inputs.
    assert all(any(np.array_equal(row, original) for original in x) for row in seen)
    features, labels = feature_task(8, seed=0)
    (batch, _), = data.make_dataset(features.astype(np.float64), labels, num_classes=CLASSES,
                                    batch_size=8, training=False).as_numpy_iterator()
    assert batch.dtype == np.float32
    np.testing.assert_array_equal(batch, features)
    with pytest.raises(ValueError, match=r"augment=True crops and flips images"):
        data.make_dataset(x, y, num_classes=CLASSES, batch_size=4, training=True, augment=True)


def test_a_group_config_of_earlier_versions_loads():
    """Before input specs, a group's config held `image_shape` and the pixel statistics (zeros
    and ones for a model that normalised its own pixels): such configs build the same group."""
    group = GroupModel(backbone="tiny", num_classes=10, num_students=3, image_shape=(16, 16, 3))
    config = group.get_config()
    old = {key: value for key, value in config.items() if key != "input_spec"}
    old["image_shape"] = [16, 16, 3]
    rebuilt = GroupModel.from_config(old)
    assert rebuilt.example_spec == group.example_spec and rebuilt.image_shape == (16, 16, 3)
    rebuilt.set_weights(group.get_weights())
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(rebuilt(images)["leader_logits"]),
                               np.asarray(group(images)["leader_logits"]), rtol=1e-6)
    # A user's model that normalises its own pixels: saved then with mean 0 and std 1.
    pixels = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(pixels)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(x))
    backbone = models.from_keras(keras.Model(pixels, keras.layers.Dense(10)(x)))
    old = {**GroupModel(backbone=backbone, num_classes=10, num_students=2,
                        method="dml").get_config(),
           "image_shape": [16, 16, 3], "pixel_mean": [0.0] * 3, "pixel_std": [1.0] * 3}
    del old["input_spec"]
    assert GroupModel.from_config(old).normalizer is None


def test_okddip_export_takes_the_examples_of_a_token_group(tmp_path):
    """`okddip export --checkpoint=... --examples=...`: a group trained in Python has no workdir
    data; the examples file calibrates the int8 file and measures parity on token ids."""
    group = GroupModel(backbone=models.from_keras(token_classifier()), num_classes=CLASSES,
                       num_students=2, method="dml", sharing="network")
    group.save(tmp_path / "text.keras")
    x, y = marker_task(48, seed=6)
    np.savez(tmp_path / "examples.npz", inputs=x, labels=y)
    result = subprocess.run(
        [sys.executable, "-m", "okddip_tf.cli", "export", f"--checkpoint={tmp_path}/text.keras",
         f"--examples={tmp_path}/examples.npz", "--formats=saved_model,int8",
         "--calibration_images=32"], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "export" / "leader" / "1" / export.REPORT_NAME) as f:
        report = json.load(f)
    assert report["evaluation"] == {"images": "evaluation inputs", "count": 48,
                                    "keras_accuracy": report["evaluation"]["keras_accuracy"]}
    assert report["evaluation"]["keras_accuracy"] == pytest.approx(
        np.mean(leader_logits(group, x).argmax(-1) == y))
    assert report["artefacts"]["int8"]["calibration"]["inputs"] == 32
    assert report["artefacts"]["int8"]["input_dtype"] == "int32"
    assert report["artefacts"]["saved_model"]["max_abs_logit_diff"] <= SAVED_MODEL_ATOL
    np.savez(tmp_path / "bad.npz", tokens=x)
    result = subprocess.run(
        [sys.executable, "-m", "okddip_tf.cli", "export", f"--checkpoint={tmp_path}/text.keras",
         f"--examples={tmp_path}/bad.npz", "--overwrite"],
        capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 1 and "holds ['tokens'], no `inputs`" in result.stderr


def test_okddip_train_takes_token_ids_from_an_npz_resumes_and_exports(tmp_path, run_cli):
    """From the command line: an .npz of token ids and a .keras text model train as a group
    (data.source=npz, model.backbone=FILE.keras), resume for one more epoch, and export a leader
    that takes int32 token ids; the export's accuracy on the test split is the one training
    reported for its last epoch (the same data and the same leader)."""
    x, y = marker_task(512, seed=11)
    test_x, test_y = marker_task(200, seed=12)
    np.savez(tmp_path / "tokens.npz", x_train=x.astype(np.int64), y_train=y, x_test=test_x,
             y_test=test_y)
    token_classifier().save(tmp_path / "text.keras")
    workdir = tmp_path / "run"
    flags = ["train", "--config=configs/quickstart.py", f"--workdir={workdir}",
             "--config.data.source=npz", f"--config.data.path={tmp_path}/tokens.npz",
             "--config.data.name=marker", f"--config.model.backbone={tmp_path}/text.keras",
             "--config.data.train_examples=512", "--config.data.batch_size=64",
             "--config.optim.learning_rate=0.02", "--config.model.num_students=3",
             "--config.export.after_training=False"]
    first = run_cli(*flags, "--config.train.epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    history = json.loads((workdir / "history.json").read_text())
    second = run_cli(*flags, "--config.train.epochs=2")
    assert second.returncode == 0, second.stderr[-3000:]
    resumed = json.loads((workdir / "history.json").read_text())
    assert len(resumed["leader_accuracy"]) == 2
    assert resumed["leader_accuracy"][0] == history["leader_accuracy"][0]  # epoch 1 kept
    exported = run_cli("export", f"--workdir={workdir}", "--calibration_images=100")
    assert exported.returncode == 0, exported.stderr[-3000:]
    info = json.loads((workdir / "dataset_info.json").read_text())
    assert (info["image_shape"], info["input_shape"], info["input_dtype"]) == (
        None, [LENGTH], "int32")
    metrics = json.loads((workdir / "metrics.json").read_text())
    report = json.loads((workdir / "export" / "leader" / "1" / export.REPORT_NAME).read_text())
    assert report["evaluation"]["count"] == 200
    assert report["evaluation"]["keras_accuracy"] == pytest.approx(
        metrics["final_epoch"]["leader_accuracy"], abs=1e-6)
    assert report["artefacts"]["int8"]["input_dtype"] == "int32"
    assert report["artefacts"]["saved_model"]["max_abs_logit_diff"] <= SAVED_MODEL_ATOL
    assert report["artefacts"]["float32"]["max_abs_logit_diff"] <= FLOAT32_TFLITE_ATOL


def test_a_backbone_that_cannot_take_the_npz_inputs_is_a_config_error(tmp_path):
    """An image network on token ids, a model whose input has another shape, or a token model
    given floats fails before training with both named and what to do."""
    info = DatasetInfo(name="marker", num_classes=CLASSES, image_shape=None, class_names=None,
                       num_train_examples=64, num_eval_examples=8, pixel_mean=(), pixel_std=(),
                       input_shape=(LENGTH,), input_dtype="int32")
    config = config_module.get_base_config()
    config.model.backbone = "resnet20"
    with pytest.raises(ConfigError, match=r"model.backbone='resnet20' is an image network, but "
                                          r"data 'marker' holds int32 inputs of shape \[16\]"):
        builders.build_backbone(config, info)
    feature_classifier().save(tmp_path / "mlp.keras")  # 12 features
    config.model.backbone = str(tmp_path / "mlp.keras")
    features = DatasetInfo(**{**info.__dict__, "input_shape": (FEATURES + 1,),
                              "input_dtype": "float32"})
    with pytest.raises(ConfigError, match=r"does not take the examples of data 'marker' "
                                          r"\(float32, shape \[13\] each\).*axis 1 must be 12"):
        builders.build_group(config, features, builders.build_method(config))
    token_classifier().save(tmp_path / "text.keras")
    config.model.backbone = str(tmp_path / "text.keras")
    floats = DatasetInfo(**{**info.__dict__, "input_dtype": "float32"})
    with pytest.raises(ConfigError, match=r"\(float32, shape \[16\] each\).*hold integers"):
        builders.build_group(config, floats, builders.build_method(config))
