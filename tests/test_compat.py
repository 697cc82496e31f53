"""okddip_tf.compat: each private Keras, TensorFlow or tfds name behaves as compat expects with the
installed versions, and each check fails loudly (PrivateAPIChanged) once its name is gone or has
changed shape (simulated with monkeypatch)."""

import json
import os
import pathlib
import re
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from keras.src.backend.tensorflow import trainer as keras_trainer
from keras.src.ops import node as keras_node
from tensorflow.lite.python import convert as lite_convert
from tensorflow.lite.tools import flatbuffer_utils
from tensorflow.python import util as tf_util

from okddip_tf import compat, data
from okddip_tf.data import download
from okddip_tf.compat import PrivateAPIChanged

PACKAGE = pathlib.Path(compat.__file__).resolve().parent
FLOAT32, INT8 = 0, 9  # TFLite schema TensorType values


def defining_class(cls, name):
    return next(klass for klass in cls.__mro__ if name in vars(klass))


def loud(name, distribution="keras"):
    """pytest.raises for the PrivateAPIChanged naming `name` and the installed version."""
    return pytest.raises(PrivateAPIChanged, match=re.escape(name) + ".*" + re.escape(
        compat.installed_version(distribution)))


def break_attribute(monkeypatch, owner, name, stand_in):
    """Simulates a release that removed `owner.name` (stand_in None) or changed it to stand_in."""
    if stand_in is None:
        monkeypatch.delattr(owner, name)
    else:
        monkeypatch.setattr(owner, name, stand_in)


def tiny_model():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    return model


def tiny_data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(8, 4)).astype(np.float32), rng.normal(size=(8, 1)).astype(np.float32)


# ------------------------------------------------------------------------------ the module itself


def test_importing_compat_starts_no_framework():
    script = ("import sys, okddip_tf.compat; print(__import__('json').dumps([m for m in "
              "('tensorflow', 'keras', 'tensorflow_datasets', 'jax') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=120, cwd=PACKAGE.parent)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_no_other_module_of_the_package_uses_a_private_library_name():
    private = re.compile(r"keras\.src|tensorflow\.python|tensorflow\.lite\.(python|tools)|_pywrap"
                         r"|tfds\.core\.registered|_keras_history|_inbound_nodes|url_infos"
                         r"|_get_variable_index|_maybe_symbolic_build|_experimental_calibrate_only"
                         r"|_collective_all_reduce|keras_tuner\.src|_retry_queue")
    found = [f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
             for path in sorted(PACKAGE.rglob("*.py")) if path.name != "compat.py"
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if private.search(line)]
    assert not found, "private library names outside okddip_tf/compat.py:\n" + "\n".join(found)


def test_the_error_names_the_private_api_the_version_and_what_to_do():
    error = compat.changed("keras", "Thing._private", "is gone")
    assert isinstance(error, RuntimeError) and not isinstance(error, AttributeError)
    message = str(error)
    assert "Thing._private" in message and "is gone" in message
    assert f"keras {keras.__version__}" in message
    assert f"pip install '{compat.TESTED['keras']}'" in message and "report" in message
    assert compat.installed_version("tensorflow") == tf.__version__


def test_code_names_sees_names_read_in_nested_functions():
    def outer(self):
        def inner():
            return self.deep_attribute(global_name)  # noqa: F821
        return inner

    assert {"deep_attribute", "global_name"} <= compat.code_names(outer)
    assert "deep_attribute" not in compat.code_names(tiny_data)


# --------------------------------------------------------------------------- Keras: optimizers


def test_variable_index_finds_each_variables_momentum():
    variables = [keras.Variable(np.zeros(shape, np.float32)) for shape in [(2, 3), (5,), (1,)]]
    optimizer = keras.optimizers.SGD(momentum=0.9)
    optimizer.build(variables)
    indices = [compat.variable_index(optimizer, v) for v in variables]
    assert sorted(indices) == [0, 1, 2]
    for variable, index in zip(variables, indices):
        assert tuple(optimizer.momentums[index].shape) == tuple(variable.shape)


def test_variable_index_fails_loudly_when_the_method_goes_or_changes(monkeypatch):
    variable = keras.Variable(np.zeros(2, np.float32))
    optimizer = keras.optimizers.SGD(momentum=0.9)
    optimizer.build([variable])
    owner = defining_class(type(optimizer), "_get_variable_index")
    monkeypatch.setattr(owner, "_get_variable_index", lambda self, v: "momentum_0")
    with loud("_get_variable_index"):
        compat.variable_index(optimizer, variable)
    monkeypatch.delattr(owner, "_get_variable_index")
    with loud("_get_variable_index"):
        compat.variable_index(optimizer, variable)


# --------------------------------------------------------------- Keras: the multi-worker fixes


def test_fit_and_evaluate_call_the_models_maybe_symbolic_build_and_skip_replaces_it():
    model = tiny_model()
    calls = []
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: calls.append(1)
    x, y = tiny_data()
    model.fit(x, y, epochs=1, verbose=0)
    model.evaluate(x, y, verbose=0)
    assert len(calls) == 2  # Keras reads the attribute on the model: the replacement is used
    compat.skip_symbolic_build(model)
    assert model._maybe_symbolic_build(iterator=None, data_batch=(x, y)) is None
    model.fit(x, y, epochs=1, verbose=0)
    assert len(calls) == 2


@pytest.mark.parametrize("name, stand_in", [
    ("_maybe_symbolic_build", None), ("_maybe_symbolic_build", lambda self, batch: None),
    ("fit", lambda self, *args, **kwargs: None)], ids=["gone", "signature", "fit_no_longer_calls_it"])
def test_skip_symbolic_build_fails_loudly_and_leaves_the_model_alone(monkeypatch, name, stand_in):
    break_attribute(monkeypatch, keras_trainer.TensorFlowTrainer, name, stand_in)
    model = tiny_model()
    with loud("_maybe_symbolic_build"):
        compat.skip_symbolic_build(model)
    assert "_maybe_symbolic_build" not in vars(model)


def test_skip_symbolic_build_refuses_what_is_not_a_keras_model():
    with pytest.raises(TypeError):
        compat.skip_symbolic_build(object())


def test_collective_all_reduce_multi_worker_is_false_on_one_worker():
    assert compat.collective_all_reduce_multi_worker(tf.distribute.get_strategy()) is False
    assert compat.collective_all_reduce_multi_worker(
        tf.distribute.MirroredStrategy(["/cpu:0"])) is False


@pytest.mark.parametrize("stand_in", [None, lambda strategy, mode: False, lambda strategy: None],
                         ids=["gone", "signature", "not_bool"])
def test_collective_all_reduce_multi_worker_fails_loudly(monkeypatch, stand_in):
    name = "_collective_all_reduce_multi_worker"
    break_attribute(monkeypatch, keras_trainer, name, stand_in)
    with loud(name):
        compat.collective_all_reduce_multi_worker(tf.distribute.get_strategy())


def test_replace_reduce_per_replica_is_what_fit_uses_and_happens_once(monkeypatch):
    current = keras_trainer.reduce_per_replica

    def unmarked(values, strategy, reduction):  # restored after the test, never marked
        return current(values, strategy, reduction)

    monkeypatch.setattr(keras_trainer, "reduce_per_replica", unmarked)
    reductions = []

    def counting(original):
        def reduce_per_replica(values, strategy, reduction):
            reductions.append(reduction)
            return original(values, strategy, reduction)
        return reduce_per_replica

    assert compat.replace_reduce_per_replica(counting) is True
    assert compat.replace_reduce_per_replica(counting) is False
    model = tiny_model()
    history = model.fit(*tiny_data(), epochs=1, verbose=0)
    assert reductions and np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("stand_in, make_function", [
    (None, None), (lambda values, strategy: values, None),
    (lambda values, strategy, reduction: values, lambda self, step_function: step_function)],
    ids=["gone", "signature", "no_longer_called"])
def test_replace_reduce_per_replica_fails_loudly(monkeypatch, stand_in, make_function):
    name = "reduce_per_replica"
    break_attribute(monkeypatch, keras_trainer, name, stand_in)
    if make_function is not None:
        monkeypatch.setattr(keras_trainer.TensorFlowTrainer, "_make_function", make_function)
    with loud(name):
        compat.replace_reduce_per_replica(lambda original: original)
    assert not getattr(getattr(keras_trainer, name, None), "okddip_replacement", False)


# ---------------------------------------------------------------- Keras: functional graphs


def test_functional_model_class_tells_functional_from_subclassed_models():
    functional = compat.functional_model_class()
    inputs = keras.Input((3,))
    assert isinstance(keras.Model(inputs, keras.layers.Dense(2)(inputs)), functional)

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    assert not isinstance(Subclassed(), functional)


def test_functional_model_class_fails_loudly(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras.src.models.functional", None)
    with loud("keras.src.models.functional.Functional"):
        compat.functional_model_class()
    monkeypatch.setitem(sys.modules, "keras.src.models.functional",
                        types.SimpleNamespace(Functional=dict))
    with loud("keras.src.models.functional.Functional"):
        compat.functional_model_class()


def test_history_and_inbound_tensors_walk_a_functional_graph():
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(3)
    hidden = dense(inputs)
    softmax = keras.layers.Softmax()
    outputs = softmax(hidden)
    again = dense(keras.layers.Identity()(inputs))  # a second call of the same layer
    assert compat.keras_history(outputs) == (softmax, 0, 0)
    assert compat.keras_history(again) == (dense, 1, 0)
    assert compat.inbound_tensors(outputs)[0] is hidden
    assert compat.inbound_tensors(hidden)[0] is inputs
    calls = compat.call_inputs(dense)
    assert len(calls) == 2 and calls[0][0] is inputs and calls[1][0] is not inputs
    with pytest.raises(ValueError, match="not produced by a layer"):
        compat.keras_history(keras.KerasTensor((None, 4)))
    compat.check_keras_graph()


def test_keras_history_fails_loudly_when_keras_stops_recording_it(monkeypatch):
    original = keras_node.Node.__init__

    def renamed(self, *args, **kwargs):  # a Keras that keeps the history under another name
        original(self, *args, **kwargs)
        for tensor in self.outputs:
            tensor._history = vars(tensor).pop("_keras_history", None)

    monkeypatch.setattr(keras_node.Node, "__init__", renamed)
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2)(inputs)
    with loud("_keras_history"):
        compat.keras_history(outputs)
    with loud("_keras_history"):
        compat.inbound_tensors(outputs)


def test_keras_history_and_inbound_nodes_fail_loudly_on_another_shape(monkeypatch):
    inputs = keras.Input((4,))
    layer = keras.layers.Dense(2)
    outputs = layer(inputs)
    monkeypatch.setattr(outputs, "_keras_history", (layer, 0, 0))  # a plain tuple, no fields
    with loud("_keras_history"):
        compat.keras_history(outputs)
    monkeypatch.setattr(layer, "_inbound_nodes", {0: "node"})
    with loud("_inbound_nodes"):
        compat.call_inputs(layer)
    monkeypatch.setattr(layer, "_inbound_nodes", [types.SimpleNamespace(inputs=[inputs])])
    with loud("input_tensors"):
        compat.call_inputs(layer)
    monkeypatch.delattr(layer, "_inbound_nodes")
    with loud("_inbound_nodes"):
        compat.call_inputs(layer)


# --------------------------------------------------------------------------- TensorFlow: oneDNN


def test_onednn_enabled_answers_what_tensorflow_loaded_with():
    # okddip_tf sets TF_ENABLE_ONEDNN_OPTS=1 unless it was set (conftest imports it before TF).
    assert compat.onednn_enabled() is (os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "1")


@pytest.mark.parametrize("change", ["module_gone", "function_gone", "not_bool"])
def test_onednn_enabled_fails_loudly(monkeypatch, change):
    module_name = "tensorflow.python.util._pywrap_util_port"
    if change == "module_gone":
        monkeypatch.delattr(tf_util, "_pywrap_util_port")
        monkeypatch.setitem(sys.modules, module_name, None)
    else:
        stand_in = types.SimpleNamespace(IsMklEnabled=lambda: 1) if change == "not_bool" else \
            types.SimpleNamespace()
        monkeypatch.setattr(tf_util, "_pywrap_util_port", stand_in)
    with loud("_pywrap_util_port.IsMklEnabled", "tensorflow"):
        compat.onednn_enabled()


# ----------------------------------------------------------------- TensorFlow: TFLite internals


WEIGHTS = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)


@tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
def small_network(x):
    return tf.nn.relu(tf.matmul(x, tf.constant(WEIGHTS)) + 0.5)


def int8_converter():
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [small_network.get_concrete_function()], small_network)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    images = np.random.default_rng(2).normal(size=(16, 1, 4)).astype(np.float32)
    converter.representative_dataset = lambda: ([image] for image in images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter


def io_types(model_bytes):
    model = compat.tflite_model_object(model_bytes)
    subgraph = model.subgraphs[0]
    return [subgraph.tensors[i].type for i in (*subgraph.inputs, *subgraph.outputs)]


def test_calibrate_only_then_quantize_calibrated_is_what_convert_does():
    converter = int8_converter()
    compat.calibrate_only(converter, True)
    calibrated = converter.convert()
    compat.calibrate_only(converter, False)
    model = compat.tflite_model_object(calibrated)
    tensors = model.subgraphs[0].tensors
    assert io_types(calibrated) == [FLOAT32, FLOAT32]  # float, with recorded ranges
    ranged = [t for t in tensors if t.quantization is not None and t.quantization.min is not None]
    assert ranged and all(t.type == FLOAT32 for t in ranged)
    quantised = compat.quantize_calibrated(calibrated, tf.int8, tf.int8)
    assert io_types(quantised) == [INT8, INT8]
    assert io_types(converter.convert()) == [INT8, INT8]  # the flag is off again
    # The flatbuffer round trip keeps the model as it was.
    assert compat.tflite_model_bytes(model) == bytes(
        flatbuffer_utils.convert_object_to_bytearray(model))
    assert len(compat.tflite_model_object(compat.tflite_model_bytes(model)).subgraphs[0]
               .tensors) == len(tensors)


def test_calibrate_only_fails_loudly(monkeypatch):
    converter = int8_converter()
    monkeypatch.setattr(type(converter), "_quantize", lambda self, *args, **kwargs: None)
    with loud("_experimental_calibrate_only", "tensorflow"):
        compat.calibrate_only(converter, True)
    monkeypatch.undo()
    del converter._experimental_calibrate_only
    with loud("_experimental_calibrate_only", "tensorflow"):
        compat.calibrate_only(converter, True)


@pytest.mark.parametrize("change", ["module_gone", "quantize_gone", "quantize_signature",
                                    "deduplicate_gone"])
def test_quantize_calibrated_fails_loudly(monkeypatch, change):
    if change == "module_gone":
        monkeypatch.setitem(sys.modules, "tensorflow.lite.python.convert", None)
        monkeypatch.delattr(sys.modules["tensorflow.lite.python"], "convert", raising=False)
        name = "tensorflow.lite.python.convert"
    elif change == "quantize_gone":
        monkeypatch.delattr(lite_convert, "mlir_quantize")
        name = "mlir_quantize"
    elif change == "quantize_signature":
        monkeypatch.setattr(lite_convert, "mlir_quantize", lambda input_data_str: input_data_str)
        name = "mlir_quantize"
    else:
        monkeypatch.delattr(lite_convert, "deduplicate_readonly_buffers")
        name = "deduplicate_readonly_buffers"
    with loud(name, "tensorflow"):
        compat.quantize_calibrated(b"", tf.int8, tf.int8)


@pytest.mark.parametrize("function", ["convert_bytearray_to_object", "convert_object_to_bytearray"])
def test_flatbuffer_tools_fail_loudly(monkeypatch, function):
    monkeypatch.delattr(flatbuffer_utils, function)
    with loud(function, "tensorflow"):
        compat.tflite_model_object(b"")
    with loud(function, "tensorflow"):
        compat.tflite_model_bytes(None)


# ------------------------------------------------------------------------- tensorflow-datasets


def test_dataset_not_found_error_is_what_tfds_builder_raises():
    error = compat.dataset_not_found_error()
    assert issubclass(error, Exception)
    with pytest.raises(error):
        tfds.builder("okddip_no_such_dataset")


def test_dataset_not_found_error_fails_loudly_on_every_load(monkeypatch, tmp_path):
    monkeypatch.setattr(tfds.core, "DatasetNotFoundError", "moved")
    with loud("tfds.core.DatasetNotFoundError", "tensorflow-datasets"):
        compat.dataset_not_found_error()
    monkeypatch.delattr(tfds.core, "DatasetNotFoundError")
    # A known name: the check runs before tfds is asked, not only when a name is unknown.
    with loud("tfds.core.DatasetNotFoundError", "tensorflow-datasets"):
        data.load_datasets(name="cifar10", data_dir=str(tmp_path), download=False)


def test_download_urls_are_tfds_recorded_download_urls(tmp_path):
    assert "url_infos" in dir(tfds.core.DatasetBuilder)
    urls = compat.download_urls(tfds.builder("cifar10", data_dir=str(tmp_path)))
    assert urls == sorted(urls) and urls and all(url.startswith("http") for url in urls)
    assert compat.download_urls(types.SimpleNamespace(url_infos=None)) == []


class BuilderWithout:
    """A tfds builder of a tfds that renamed url_infos."""

    name, data_dir = "fake_set", "/nowhere/fake_set/1.0.0"

    def __init__(self, prepared):
        self.prepared = prepared

    def is_prepared(self):
        return self.prepared

    def download_and_prepare(self):
        raise AssertionError("must not download")


def test_download_urls_fail_loudly_where_a_download_needs_them(monkeypatch):
    with loud("url_infos", "tensorflow-datasets"):
        compat.download_urls(BuilderWithout(prepared=False))
    with loud("url_infos", "tensorflow-datasets"):
        compat.download_urls(types.SimpleNamespace(url_infos=["http://a"]))
    monkeypatch.delenv(download.OFFLINE_ENV, raising=False)
    with loud("url_infos", "tensorflow-datasets"):
        download.ensure_prepared(BuilderWithout(prepared=False), "fake_set", "here")
    download.ensure_prepared(BuilderWithout(prepared=True), "fake_set", "here")  # needs none


# ------------------------------------------------------------------------------------ KerasTuner


def kerastuner_oracle(tmp_path, max_trials=2):
    import keras_tuner as kt  # pylint: disable=import-outside-toplevel

    oracle = kt.oracles.RandomSearchOracle(objective=kt.Objective("score", "max"),
                                           max_trials=max_trials, seed=1)
    oracle.hyperparameters.Float("x", 0.0, 1.0)
    oracle.verbose = 0
    oracle._set_project_dir(str(tmp_path), "search")
    return oracle


def test_oracle_service_answers_trial_requests_from_the_oracle(tmp_path):
    from keras_tuner.src import protos  # pylint: disable=import-outside-toplevel

    servicer_class, add_to_server = compat.keras_tuner_oracle_service()
    assert callable(add_to_server)
    oracle = kerastuner_oracle(tmp_path)
    servicer = servicer_class(oracle)
    answer = servicer.CreateTrial(protos.get_service().CreateTrialRequest(tuner_id="tuner0"), None)
    assert answer.trial.trial_id == "0" and list(oracle.ongoing_trials) == ["tuner0"]
    got = servicer.GetTrial(protos.get_service().GetTrialRequest(trial_id="0"), None)
    assert got.trial.trial_id == "0"


@pytest.mark.parametrize("break_it", ["servicer", "rpc"])
def test_oracle_service_fails_loudly(monkeypatch, break_it):
    from keras_tuner.src.distribute import oracle_chief  # pylint: disable=import-outside-toplevel

    if break_it == "servicer":
        monkeypatch.delattr(oracle_chief, "OracleServicer")
    else:
        monkeypatch.setattr(oracle_chief.OracleServicer, "GetTrial",
                            lambda self, request, context: None)
    with loud("OracleServicer", "keras-tuner"):
        compat.keras_tuner_oracle_service()


def test_requeue_trial_makes_create_trial_hand_it_out_again(tmp_path):
    oracle = kerastuner_oracle(tmp_path)
    first = oracle.create_trial("tuner0")
    oracle.ongoing_trials.pop("tuner0")  # as the chief does for a lost worker
    compat.requeue_trial(oracle, first.trial_id)
    compat.requeue_trial(oracle, first.trial_id)  # once only
    again = oracle.create_trial("tuner1")
    assert (again.trial_id, again.status) == (first.trial_id, "RUNNING")
    assert oracle.create_trial("tuner2").trial_id != first.trial_id


@pytest.mark.parametrize("break_it", ["queue", "create_trial"])
def test_requeue_trial_fails_loudly(tmp_path, monkeypatch, break_it):
    oracle = kerastuner_oracle(tmp_path)
    if break_it == "queue":
        monkeypatch.setattr(oracle, "_retry_queue", None)
    else:
        monkeypatch.setattr(type(oracle), "create_trial", lambda self, tuner_id: None)
    with loud("Oracle._retry_queue", "keras-tuner"):
        compat.requeue_trial(oracle, "0")
