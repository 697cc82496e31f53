"""Every use of a private Keras, TensorFlow, tensorflow-datasets or KerasTuner name, each checked
where used.

okddip_tf needs a few things these libraries offer no public API for; each function below says
which upstream issue or which missing public API it works round. A private name can be renamed,
moved or change meaning in any release, and some uses would then do nothing instead of failing
(an attribute set on a model that Keras no longer reads, an `except` clause whose name is looked
up only when an exception happens). So each function checks, where it is used, that the private
name is there and has the shape okddip_tf expects, and raises `PrivateAPIChanged` otherwise,
naming the private name, the installed version and what to do. tests/test_compat.py checks every
name against the installed versions and that every check fires when its name goes.

Nothing is imported at module import: each function imports Keras, TensorFlow or tfds itself, so
importing this module starts no framework (the JAX/npz path runs without TensorFlow). It is one
module, not one per library, because it is the one place to read when upgrading a pin, and the
lazy imports already keep each library out until a function that needs it runs.
"""

import collections.abc
import importlib.metadata
import inspect
import sys
import types

# distribution -> the versions okddip_tf is tested with (pyproject.toml's dependencies)
TESTED = {"keras": "keras>=3.15,<3.16", "tensorflow": "tensorflow>=2.21,<2.22",
          "tensorflow-datasets": "tensorflow-datasets==4.9.10",
          "keras-tuner": "keras-tuner==1.4.8"}
_MODULES = {"keras": "keras", "tensorflow": "tensorflow",
            "tensorflow-datasets": "tensorflow_datasets", "keras-tuner": "keras_tuner"}
_VARIANTS = {"tensorflow": ("tensorflow-cpu", "tensorflow-macos")}  # other wheels of one package


class PrivateAPIChanged(RuntimeError):
    """A private Keras, TensorFlow or tfds name okddip_tf relies on is gone or changed.

    A RuntimeError, not an AttributeError: `hasattr`, `getattr(..., default)` and Keras' own
    attribute handling swallow AttributeErrors, which would make the failure silent again.
    """


def installed_version(distribution):
    """The installed version of `distribution` ("keras", "tensorflow", ...), or "unknown"."""
    for name in (distribution, *_VARIANTS.get(distribution, ())):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    module = sys.modules.get(_MODULES.get(distribution, distribution))
    return getattr(module, "__version__", "unknown")


def changed(distribution, name, what):
    """The error for the private `name` of `distribution` that `what` (e.g. "is gone")."""
    pin = TESTED[distribution]
    return PrivateAPIChanged(
        f"okddip_tf relies on {distribution}'s private {name}, which {what} in the installed "
        f"{distribution} {installed_version(distribution)}. okddip_tf is tested with {pin}: "
        f"install that (pip install '{pin}'), or report this message to okddip_tf's maintainers "
        "so that okddip_tf/compat.py can follow the change.")


def code_names(function):
    """The global and attribute names that `function` (unwrapped) and the functions defined
    inside it look up: whether a library's code still reads a name okddip_tf replaces."""
    stack, names = [inspect.unwrap(function).__code__], set()
    while stack:
        code = stack.pop()
        names.update(code.co_names)
        stack.extend(const for const in code.co_consts if isinstance(const, types.CodeType))
    return names


def _parameters(function):
    return list(inspect.signature(function).parameters)


# Keras ------------------------------------------------------------------------------------------


def variable_index(optimizer, variable):
    """The index of `variable` in the optimizer's per-variable lists (e.g. `momentums`).

    Missing public API: inside `update_step` a Keras 3 optimizer has no public way to find the
    optimizer variable that `add_variable_from_reference` made for a model variable. Keras' own
    optimizers (SGD, Adam, ...) call the private `_get_variable_index`; keras-team/keras#21924
    moved Muon onto it because under TensorFlow `update_step` receives the backend variable, whose
    path cannot be used to look the slot up.
    """
    name = "BaseOptimizer._get_variable_index(variable)"
    method = getattr(optimizer, "_get_variable_index", None)
    if not callable(method):
        raise changed("keras", name, "is gone")
    index = method(variable)
    if not isinstance(index, int):
        raise changed("keras", name, f"returned a {type(index).__name__} instead of an int")
    return index


def keras_tf_trainer():
    """Keras' TensorFlow trainer module (private path keras.src.backend.tensorflow.trainer)."""
    try:
        from keras.src.backend.tensorflow import trainer  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        raise changed("keras", "module keras.src.backend.tensorflow.trainer",
                      f"cannot be imported ({error})") from error
    return trainer


def skip_symbolic_build(model):
    """Makes Keras' `fit` and `evaluate` skip building `model` symbolically from a first batch.

    keras-team/keras#20585 (and tensorflow/tensorflow#72388): under MultiWorkerMirroredStrategy
    that build all-reduces a first (images, labels) batch, which fails ("Attempt to convert a
    value (PerReplica ...) to a Tensor"). Missing public API: no `fit` argument or model setting
    turns the build off for a model that is already built, so the private
    `TensorFlowTrainer._maybe_symbolic_build` is replaced on this model by a no-op. Checked: the
    method exists with its signature and `fit` and `evaluate` still call it (otherwise the
    replacement would silently do nothing).
    """
    trainer_class = getattr(keras_tf_trainer(), "TensorFlowTrainer", None)
    name = "TensorFlowTrainer._maybe_symbolic_build(iterator=None, data_batch=None)"
    if trainer_class is None:
        raise changed("keras", "class keras.src.backend.tensorflow.trainer.TensorFlowTrainer",
                      "is gone")
    method = getattr(trainer_class, "_maybe_symbolic_build", None)
    if not callable(method):
        raise changed("keras", name, "is gone")
    if _parameters(method) != ["self", "iterator", "data_batch"]:
        raise changed("keras", name, f"takes {_parameters(method)}")
    for caller in ("fit", "evaluate"):
        if "_maybe_symbolic_build" not in code_names(getattr(trainer_class, caller)):
            raise changed("keras", name, f"is no longer called by TensorFlowTrainer.{caller}, so "
                          "replacing it would not skip the build")
    if not isinstance(model, trainer_class):
        raise TypeError(f"{type(model).__name__} is not a Keras model of the TensorFlow backend.")
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


def collective_all_reduce_multi_worker(strategy):
    """Keras' own test for "this strategy all-reduces across several workers" (a bool).

    Missing public API: tf.distribute has no public "am I in multi-worker mode" (Keras' private
    helper reads the strategy's private `extended._in_multi_worker_mode()`); using Keras' helper
    applies the scalar fix of `distribution.enable_multi_worker_fit` exactly where Keras takes
    the collective path (tensorflow/tensorflow#72388).
    """
    name = "keras.src.backend.tensorflow.trainer._collective_all_reduce_multi_worker(strategy)"
    helper = getattr(keras_tf_trainer(), "_collective_all_reduce_multi_worker", None)
    if not callable(helper):
        raise changed("keras", name, "is gone")
    if _parameters(helper) != ["strategy"]:
        raise changed("keras", name, f"takes {_parameters(helper)}")
    result = helper(strategy)
    if not isinstance(result, bool):
        raise changed("keras", name, f"returned a {type(result).__name__} instead of a bool")
    return result


def replace_reduce_per_replica(make_replacement):
    """Replaces Keras' `reduce_per_replica` process-wide with `make_replacement(original)`, once.

    tensorflow/tensorflow#72388: Keras reduces each step's logged scalars over the workers of a
    MultiWorkerMirroredStrategy with `reduce(..., axis=0)`, which fails on a scalar. Missing
    public API: no hook changes how Keras reduces a step's outputs over replicas, so the private
    module function is replaced. Checked: it exists with its signature, and the trainer's step
    functions still look it up as a module global (otherwise the replacement would not be used).
    A second call (the replacement is marked) does nothing and returns False.
    """
    trainer = keras_tf_trainer()
    name = "keras.src.backend.tensorflow.trainer.reduce_per_replica(values, strategy, reduction)"
    original = getattr(trainer, "reduce_per_replica", None)
    if getattr(original, "okddip_replacement", False):
        return False
    if not callable(original):
        raise changed("keras", name, "is gone")
    if _parameters(original) != ["values", "strategy", "reduction"]:
        raise changed("keras", name, f"takes {_parameters(original)}")
    make_function = getattr(getattr(trainer, "TensorFlowTrainer", None), "_make_function", None)
    if make_function is None or "reduce_per_replica" not in code_names(make_function):
        raise changed("keras", name, "is no longer called by TensorFlowTrainer._make_function, so "
                      "replacing it would not change how step outputs are reduced")
    replacement = make_replacement(original)
    replacement.okddip_replacement = True
    trainer.reduce_per_replica = replacement
    return True


def functional_model_class():
    """Keras' class of functional models (`keras.Model(inputs, outputs)`).

    Missing public API: Keras 3 does not export it (`keras.Functional` is absent from the public
    namespace, keras-team/keras#19510), so "is this model functional?" has no public
    isinstance check; the private keras.src.models.functional.Functional is used.
    """
    name = "keras.src.models.functional.Functional"
    try:
        from keras.src.models.functional import Functional  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        raise changed("keras", name, f"cannot be imported ({error})") from error
    import keras  # pylint: disable=import-outside-toplevel

    if not (isinstance(Functional, type) and issubclass(Functional, keras.Model)):
        raise changed("keras", name, "is no longer a subclass of keras.Model")
    return Functional


# Missing public API for the three functions below: Keras 3 has no public way to ask a
# KerasTensor which layer call produced it, nor a layer which tensors each of its calls took.
# Keras 2's `layer.inbound_nodes`, `get_input_at` and `get_output_at` are gone without a
# replacement (keras-team/keras#21205, keras-team/keras#23238); keras-team/keras#19881 was
# answered with the private `_keras_history`.


def keras_history(tensor):
    """(operation, node_index, tensor_index): the layer call of a functional model that made
    `tensor`, from its private `_keras_history`.

    Raises ValueError for a tensor no layer produced, and PrivateAPIChanged where Keras no longer
    records `_keras_history` at all (checked on a one-layer graph when a tensor has none).
    """
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        check_keras_graph()
        raise ValueError(f"{tensor!r} was not produced by a layer of a functional model.")
    try:
        return history.operation, history.node_index, history.tensor_index
    except AttributeError as error:
        raise changed("keras", "KerasTensor._keras_history (operation, node_index, tensor_index)",
                      f"is a {type(history).__name__} without those fields") from error


def call_inputs(layer):
    """The input tensors of each call of `layer` in functional graphs, in the order of its
    private `_inbound_nodes` (a list of nodes, each with `input_tensors`)."""
    nodes = getattr(layer, "_inbound_nodes", None)
    if not isinstance(nodes, list):
        raise changed("keras", "Operation._inbound_nodes (a list of Node)",
                      f"is a {type(nodes).__name__} on {type(layer).__name__}")
    try:
        return [list(node.input_tensors) for node in nodes]
    except AttributeError as error:
        raise changed("keras", "Node.input_tensors of Operation._inbound_nodes",
                      "is gone") from error


def inbound_tensors(tensor):
    """The input tensors of the layer call that produced `tensor`."""
    operation, node_index, _ = keras_history(tensor)
    calls = call_inputs(operation)
    if not 0 <= node_index < len(calls):
        raise changed("keras", "KerasTensor._keras_history.node_index",
                      f"is {node_index} for a layer with {len(calls)} inbound nodes")
    return calls[node_index]


def check_keras_graph():
    """Raises PrivateAPIChanged unless a one-layer functional graph records what
    `keras_history` and `call_inputs` read."""
    import keras  # pylint: disable=import-outside-toplevel

    inputs = keras.Input((2,))
    layer = keras.layers.Dense(1)
    outputs = layer(inputs)
    history = getattr(outputs, "_keras_history", None)
    if history is None:
        raise changed("keras", "KerasTensor._keras_history", "is no longer set on a layer's output")
    if tuple(history) != (layer, 0, 0):
        raise changed("keras", "KerasTensor._keras_history (operation, node_index, tensor_index)",
                      f"reads {tuple(history)!r} for the first output of a layer's first call")
    calls = call_inputs(layer)
    if len(calls) != 1 or len(calls[0]) != 1 or calls[0][0] is not inputs:
        raise changed("keras", "Operation._inbound_nodes[i].input_tensors",
                      "does not hold the tensors a layer was called on")


# TensorFlow -------------------------------------------------------------------------------------


def onednn_enabled():
    """Whether the loaded TensorFlow runs its oneDNN CPU kernels (TF_ENABLE_ONEDNN_OPTS, or
    TensorFlow's own default for this CPU and build).

    Missing public API: TensorFlow has `tf.test.is_built_with_cuda()` but nothing for oneDNN
    (tensorflow/tensorflow#17176 asked for it); TensorFlow's own tests read the private
    pybind module that `tensorflow.python.framework.test_util.IsMklEnabled` wraps.
    """
    name = "tensorflow.python.util._pywrap_util_port.IsMklEnabled()"
    try:
        from tensorflow.python.util import _pywrap_util_port  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        raise changed("tensorflow", name, f"cannot be imported ({error})") from error
    is_enabled = getattr(_pywrap_util_port, "IsMklEnabled", None)
    if not callable(is_enabled):
        raise changed("tensorflow", name, "is gone")
    result = is_enabled()
    if not isinstance(result, bool):
        raise changed("tensorflow", name, f"returned a {type(result).__name__} instead of a bool")
    return result


# Missing public API for the four functions below: `TFLiteConverter.convert()` calibrates and
# quantises in one step. There is no public way to get the activation ranges the calibrator
# recorded, to set ranges of one's own (deploy/calibration.py narrows them to percentiles), or to
# quantise a model that was calibrated that way; the converter's own private flag, quantiser and
# flatbuffer tools are used instead.


def calibrate_only(converter, on):
    """With `on`, makes `converter.convert()` return the float model carrying the calibrator's
    recorded ranges instead of the quantised model; `on=False` restores normal conversion.

    Checked: the converter has the private flag (a bool) and its quantisation step still reads
    it (otherwise `convert()` would silently quantise).
    """
    name = "TFLiteConverter._experimental_calibrate_only"
    if not isinstance(getattr(converter, "_experimental_calibrate_only", None), bool):
        raise changed("tensorflow", name, f"is not a bool attribute of {type(converter).__name__}")
    quantize = getattr(type(converter), "_quantize", None)
    if quantize is None or "_experimental_calibrate_only" not in code_names(quantize):
        raise changed("tensorflow", name, f"is no longer read by {type(converter).__name__}."
                      "_quantize, so setting it would not stop the quantisation")
    converter._experimental_calibrate_only = bool(on)


def quantize_calibrated(calibrated, input_data_type, output_data_type):
    """What `convert()` does after calibrating: TensorFlow's MLIR quantiser with the given input
    and output types, then read-only buffer deduplication (TFLite bytes in, bytes out)."""
    try:
        from tensorflow.lite.python import convert  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        raise changed("tensorflow", "module tensorflow.lite.python.convert",
                      f"cannot be imported ({error})") from error
    quantize = getattr(convert, "mlir_quantize", None)
    deduplicate = getattr(convert, "deduplicate_readonly_buffers", None)
    name = "tensorflow.lite.python.convert.mlir_quantize(input_data_str, ...)"
    if not callable(quantize):
        raise changed("tensorflow", name, "is gone")
    if not {"input_data_type", "output_data_type"} <= set(_parameters(quantize)):
        raise changed("tensorflow", name, "takes no input_data_type/output_data_type")
    if not callable(deduplicate):
        raise changed("tensorflow", "tensorflow.lite.python.convert.deduplicate_readonly_buffers",
                      "is gone")
    quantised = quantize(calibrated, input_data_type=input_data_type,
                         output_data_type=output_data_type)
    return deduplicate(quantised)


def _flatbuffer_utils():
    name = "module tensorflow.lite.tools.flatbuffer_utils"
    try:
        from tensorflow.lite.tools import flatbuffer_utils  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        raise changed("tensorflow", name, f"cannot be imported ({error})") from error
    for function in ("convert_bytearray_to_object", "convert_object_to_bytearray"):
        if not callable(getattr(flatbuffer_utils, function, None)):
            raise changed("tensorflow", f"tensorflow.lite.tools.flatbuffer_utils.{function}",
                          "is gone")
    return flatbuffer_utils


def tflite_model_object(model_bytes):
    """A .tflite file's bytes as TFLite's mutable schema object (subgraphs, tensors, buffers)."""
    return _flatbuffer_utils().convert_bytearray_to_object(model_bytes)


def tflite_model_bytes(model):
    """The schema object `tflite_model_object` returned, written back to .tflite bytes."""
    return bytes(_flatbuffer_utils().convert_object_to_bytearray(model))


# tensorflow-datasets ----------------------------------------------------------------------------


def dataset_not_found_error():
    """The exception class `tfds.builder` raises for a dataset name it does not know.

    `tfds.core.DatasetNotFoundError` is public (tensorflow.org/datasets/api_docs/python/tfds/core/
    DatasetNotFoundError); okddip_tf spelled it through the private module path
    `tfds.core.registered`. It is looked up here, before the `try` it is caught in: a name in an
    `except` clause is looked up only when an exception happens, so a moved class would have
    turned "unknown dataset" into an AttributeError and been unnoticed until then.
    """
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    error = getattr(getattr(tfds, "core", None), "DatasetNotFoundError", None)
    if not (isinstance(error, type) and issubclass(error, Exception)):
        raise changed("tensorflow-datasets", "tfds.core.DatasetNotFoundError",
                      "is not an exception class")
    return error


def download_urls(builder):
    """The URLs tfds downloads `builder`'s dataset from (its recorded checksums), sorted; empty
    where tfds records none.

    Missing public API: tfds documents no way to list a dataset's download URLs before
    downloading. `DatasetBuilder.url_infos` (a class property read from the dataset's
    checksums file) is undocumented; a tfds maintainer pointed to it for listing the URLs in
    tensorflow/datasets#2352. Checked: the attribute exists and is None or a mapping (without it,
    download.py would find no URL and refuse every download as "no download URLs").
    """
    name = "DatasetBuilder.url_infos ({url: UrlInfo} or None)"
    try:
        infos = builder.url_infos
    except AttributeError as error:
        raise changed("tensorflow-datasets", name, f"is gone ({error})") from error
    if infos is None:
        return []
    if not isinstance(infos, collections.abc.Mapping):
        raise changed("tensorflow-datasets", name, f"is a {type(infos).__name__}")
    return sorted(infos)


# KerasTuner -------------------------------------------------------------------------------------


def _undecorated(method):
    """The function KerasTuner's `synchronized` decorator wraps (it keeps no `__wrapped__`)."""
    inner = inspect.getclosurevars(method).nonlocals.get("func")
    return inner if inspect.isfunction(inner) else method


def keras_tuner_oracle_service():
    """KerasTuner's gRPC service of an oracle: (the servicer class, its add-to-server function).

    Missing public API: KerasTuner serves the chief's oracle only from inside `Tuner.search`
    (`keras_tuner.src.distribute.oracle_chief.start_server`), whose loop looks for the end of the
    search every 20 s, never stops its server and cannot hand a lost worker's trial to another;
    okddip_tf.tune_cluster serves the same servicer itself. Checked: the servicer takes the
    oracle, and answers CreateTrial, GetTrial and EndTrial by calling the oracle's methods of
    those names (which the chief's `Leases` wrap).
    """
    where = "keras_tuner.src.distribute.oracle_chief.OracleServicer"
    try:
        # pylint: disable=import-outside-toplevel
        from keras_tuner.src import protos
        from keras_tuner.src.distribute import oracle_chief
    except ImportError as error:
        raise changed("keras-tuner", "modules keras_tuner.src.protos and "
                      "keras_tuner.src.distribute.oracle_chief", f"cannot be imported ({error})"
                      ) from error
    servicer = getattr(oracle_chief, "OracleServicer", None)
    add_to_server = getattr(protos.get_service_grpc(), "add_OracleServicer_to_server", None)
    if not isinstance(servicer, type):
        raise changed("keras-tuner", where, "is gone")
    if not callable(add_to_server):
        raise changed("keras-tuner", "keras_tuner.src.protos service_pb2_grpc."
                      "add_OracleServicer_to_server", "is gone")
    if _parameters(servicer.__init__) != ["self", "oracle"]:
        raise changed("keras-tuner", f"{where}(oracle)", f"takes {_parameters(servicer.__init__)}")
    for rpc, call in (("CreateTrial", "create_trial"), ("GetTrial", "get_trial"),
                      ("EndTrial", "end_trial")):
        if call not in code_names(getattr(servicer, rpc, lambda: None)):
            raise changed("keras-tuner", f"{where}.{rpc}", f"no longer calls the oracle's {call}")
    return servicer, add_to_server


def requeue_trial(oracle, trial_id):
    """Puts trial `trial_id` back into `oracle`'s queue of trials to run again, ahead of new ones.

    Missing public API: an oracle requeues a trial only when its tuner ends it as INVALID
    (counted against `max_retries_per_trial`, and a worker that is gone ends nothing) or when the
    chief reloads the search; there is no call for "its worker is lost". Checked: the private
    `_retry_queue` is a list, and `create_trial` still takes trials from it.
    """
    name = "Oracle._retry_queue (trial ids create_trial hands out again first)"
    queue = getattr(oracle, "_retry_queue", None)
    if not isinstance(queue, list):
        raise changed("keras-tuner", name, f"is a {type(queue).__name__}, not a list")
    if "_retry_queue" not in code_names(_undecorated(type(oracle).create_trial)):
        raise changed("keras-tuner", name, "is no longer read by Oracle.create_trial")
    if trial_id not in queue:
        queue.append(trial_id)
