"""Tests for okddip_tf.deploy.calibration: percentile ranges for the full-integer int8 file."""

import keras
import numpy as np
import pytest

from okddip_tf import compat
from okddip_tf.deploy import calibration, tflite
from okddip_tf.group import GroupModel

SHAPE = (32, 32, 3)


@pytest.mark.parametrize("percentile", [100, 99.999, 99.9, 99, 90, 50.5])
@pytest.mark.parametrize("sizes", [[1000], [7, 300, 1, 92], [5, 5]])
def test_tail_tracker_matches_numpy_percentiles(percentile, sizes):
    rng = np.random.default_rng(len(sizes))
    # Repeated values too: ties must not shift the order statistics.
    batches = [np.round(rng.standard_t(3, size), 1) for size in sizes]
    tracker = calibration.TailTracker(percentile, sum(sizes))
    for batch in batches:
        tracker.update(batch.reshape(-1, 1) if batch.size > 1 else batch)
    values = np.concatenate(batches)
    lower, upper = tracker.bounds()
    assert upper == np.percentile(values, percentile, method="inverted_cdf")
    assert lower == -np.percentile(-values, percentile, method="inverted_cdf")
    assert tracker.largest.size <= max(1, tracker.k) and tracker.smallest.size <= tracker.k


def test_tail_tracker_rejects_bad_use():
    with pytest.raises(ValueError, match="percentile in"):
        calibration.TailTracker(40, 10)
    with pytest.raises(ValueError, match="positive number"):
        calibration.TailTracker(99, 0)
    tracker = calibration.TailTracker(99, 3)
    tracker.update([1.0, 2.0])
    with pytest.raises(ValueError, match="Saw 2 values of the 3"):
        tracker.bounds()
    with pytest.raises(ValueError, match="more than the 3"):
        tracker.update([3.0, 4.0])


@pytest.fixture(scope="module")
def leader_and_images(tmp_path_factory):
    """A ResNet-20 leader (residual ADDs, folded BatchNorm) and its conversion SavedModel."""
    keras.utils.set_random_seed(3)
    group = GroupModel(backbone="resnet20", num_classes=10, num_students=1, method="baseline",
                       image_shape=SHAPE)
    rng = np.random.default_rng(4)
    for weight in group.weights:  # BatchNorm statistics of a trained network, not the identity
        name = weight.path.split("/")[-1]
        if name == "moving_mean":
            weight.assign(rng.normal(0, 0.3, weight.shape).astype("float32"))
        elif name == "moving_variance":
            weight.assign(rng.uniform(0.3, 2.0, weight.shape).astype("float32"))
    images = rng.integers(0, 256, (60,) + SHAPE).astype(np.uint8)
    directory = str(tmp_path_factory.mktemp("conversion"))
    tflite.write_conversion_model(group.leader, SHAPE, directory)
    return group.leader, images, directory


def calibrated_ranges(model_bytes):
    """{tensor name: (min, max)} of a calibrated model, and its tensor names by signature name."""
    model = compat.tflite_model_object(model_bytes)
    subgraph = model.subgraphs[0]
    ranges = {t.name.decode(): (float(t.quantization.min[0]), float(t.quantization.max[0]))
              for t in subgraph.tensors
              if t.quantization is not None and t.quantization.min is not None
              and len(t.quantization.min) == 1}
    signature = model.signatureDefs[0]
    names = {o.name.decode(): subgraph.tensors[o.tensorIndex].name.decode()
             for o in list(signature.outputs) + list(signature.inputs)}
    return ranges, names


def test_full_percentile_ranges_are_the_true_ranges(leader_and_images):
    """At the 100th percentile the logits' range is exactly what the Keras leader outputs on the
    calibration images, and no range grows (a few shrink: TFLite's recorded maxima overshoot)."""
    leader, images, directory = leader_and_images
    converter = tflite.make_converter(directory, "int8", images)
    recorded = tflite.calibrate_only(converter)
    narrowed, changes = calibration.narrow_ranges(recorded, images, percentile=100)
    before, outputs = calibrated_ranges(recorded)
    after, _ = calibrated_ranges(narrowed)
    logits = leader.predict(images.astype(np.float32), verbose=0)
    np.testing.assert_allclose(after[outputs["logits"]],
                               (min(logits.min(), 0), max(logits.max(), 0)), rtol=1e-5)
    assert set(changes) <= set(before) and len(changes) > 20
    for name, (low, high) in after.items():
        assert before[name][0] - 1e-6 <= low <= 0 or low == before[name][0], name
        assert high <= before[name][1] + 1e-6, name
    assert outputs["images"] not in changes  # raw pixels keep their exact range


def test_percentile_ranges_shrink_with_the_percentile(leader_and_images):
    _, images, directory = leader_and_images
    recorded = tflite.calibrate_only(tflite.make_converter(directory, "int8", images))
    widths = {}
    for percentile in (100, 99.9, 99):
        ranges, _ = calibrated_ranges(calibration.narrow_ranges(recorded, images, percentile)[0])
        widths[percentile] = sum(high - low for low, high in ranges.values())
    assert widths[100] > widths[99.9] > widths[99]


def test_percentile_int8_file_is_integer_only_and_close_to_keras(leader_and_images):
    leader, images, directory = leader_and_images
    content = tflite.convert(directory, "int8", images, int8_calibration="percentile")
    classifier = tflite.TFLiteClassifier(model_content=content)
    assert classifier.input_dtype == np.uint8
    assert {d["dtype"] for d in classifier.output_details.values()} == {np.int8}
    model = compat.tflite_model_object(content)
    float_tensors = [t.name.decode() for t in model.subgraphs[0].tensors if t.type == 0]
    assert not float_tensors, float_tensors  # full integer: no float32 tensor anywhere
    expected = leader.predict(images.astype(np.float32), verbose=0)
    logits = classifier.predict(images)["logits"]
    assert np.corrcoef(logits.ravel(), expected.ravel())[0, 1] > 0.98


def test_unknown_calibration_method_is_rejected(leader_and_images):
    _, images, directory = leader_and_images
    with pytest.raises(ValueError, match="Unknown int8 calibration 'entropy'"):
        tflite.convert(directory, "int8", images, int8_calibration="entropy")
