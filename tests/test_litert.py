"""Tests for okddip_tf.deploy.interpreter: .tflite files run on LiteRT, TensorFlow's interpreter
is only a fallback that says so, and both keep the intermediate tensors calibration reads."""

import contextlib
import importlib.metadata
import json
import os
import pathlib
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert import interpreter as litert

from okddip_tf import compat
from okddip_tf.deploy import interpreter, tflite


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A .tflite file (bytes) of x -> relu(x @ w - 1) + x.sum(): a few intermediate tensors,
    with a `serving_default` signature like the exported files."""
    weights = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    module = tf.Module()
    module.weights = tf.Variable(weights)

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def serve(x):
        hidden = tf.nn.relu(tf.matmul(x, module.weights) - 1.0)
        return {"y": hidden + tf.reduce_sum(x, axis=-1, keepdims=True)}

    directory = str(tmp_path_factory.mktemp("small_model"))
    tf.saved_model.save(module, directory, signatures={"serving_default": serve})
    return tf.lite.TFLiteConverter.from_saved_model(directory).convert(), weights


@contextlib.contextmanager
def litert_hidden():
    """LiteRT cannot be imported (as when it is not installed) inside the block."""
    names = ("ai_edge_litert", "ai_edge_litert.interpreter")
    saved = {name: sys.modules.get(name) for name in names}
    sys.modules.update(dict.fromkeys(names))
    interpreter.runtime.cache_clear()
    try:
        yield
    finally:
        sys.modules.update(saved)
        interpreter.runtime.cache_clear()


def run_all_tensors(content, x):
    """{tensor index: value} of the model's float tensors after one run with all kept (the
    interpreter's own scratch tensors, listed after them, may hold anything)."""
    count = len(compat.tflite_model_object(content).subgraphs[0].tensors)
    runner = interpreter.make_interpreter(model_content=content, keep_all_tensors=True)
    runner.resize_tensor_input(runner.get_input_details()[0]["index"], x.shape)
    runner.allocate_tensors()
    runner.set_tensor(runner.get_input_details()[0]["index"], x)
    runner.invoke()
    values = {}
    for detail in runner.get_tensor_details():
        if detail["index"] >= count or detail["dtype"] != np.float32:
            continue
        try:
            values[detail["index"]] = runner.get_tensor(detail["index"]).copy()
        except ValueError:  # a tensor with no data (e.g. an unused optional input)
            pass
    return values


def test_tflite_files_run_on_litert(small_model):
    content, weights = small_model
    assert interpreter.runtime()[0] is litert.Interpreter
    runner = interpreter.make_interpreter(model_content=content)
    assert isinstance(runner, litert.Interpreter)
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    y = runner.get_signature_runner("serving_default")(x=x)["y"]
    expected = np.maximum(x @ weights - 1.0, 0) + x.sum(-1, keepdims=True)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_the_exporters_classifier_uses_litert(small_model, tmp_path):
    # TFLiteClassifier needs the export's signature; its interpreter comes from the one helper.
    content, _ = small_model
    (tmp_path / "m.tflite").write_bytes(content)
    assert tflite.make_interpreter is interpreter.make_interpreter
    assert isinstance(tflite.make_interpreter(str(tmp_path / "m.tflite")), litert.Interpreter)


def test_tensorflow_interpreter_is_a_fallback_said_in_one_line(small_model, capsys):
    content, _ = small_model
    with litert_hidden(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = interpreter.make_interpreter(model_content=content)
        second = interpreter.make_interpreter(model_content=content, keep_all_tensors=True)
    assert type(first) is tf.lite.Interpreter and type(second) is tf.lite.Interpreter
    assert capsys.readouterr().err.splitlines() == [interpreter.FALLBACK_NOTE]
    assert not [w for w in caught if "deprecated" in str(w.message)]


def test_both_interpreters_keep_the_same_intermediate_tensors(small_model):
    """Calibration reads every intermediate tensor: LiteRT keeps them as TF's interpreter does
    (to float rounding), and they are the values NumPy computes."""
    content, weights = small_model
    x = np.random.default_rng(2).normal(size=(6, 4)).astype(np.float32)
    with_litert = run_all_tensors(content, x)
    with litert_hidden():
        with_tf = run_all_tensors(content, x)
    assert interpreter.runtime()[0] is litert.Interpreter
    assert with_tf.keys() == with_litert.keys()
    for index, value in with_tf.items():  # the two runtimes' kernels round a little apart
        np.testing.assert_allclose(with_litert[index], value, rtol=1e-5, atol=1e-6)
    hidden = np.maximum(x @ weights - 1.0, 0)
    assert any(v.shape == hidden.shape and np.allclose(v, hidden, atol=1e-5)
               for v in with_litert.values())


# What the quickstart (`okddip train --config=configs/quickstart.py`, which trains, then exports
# and checks the .tflite files) imports from okddip_tf's own code: the modules it runs and the
# interpreter it picks. Prints the top-level names okddip_tf's code asked for.
QUICKSTART_IMPORTS = """
import builtins, json, sys
asked, original = set(), builtins.__import__

def record(name, globals=None, locals=None, fromlist=(), level=0):
    caller = (globals or {}).get("__name__", "")
    if level == 0 and caller.split(".")[0] == "okddip_tf":
        asked.add(name.split(".")[0])
    return original(name, globals, locals, fromlist, level)

builtins.__import__ = record
import okddip_tf.train, okddip_tf.deploy.export
from okddip_tf.deploy import interpreter
interpreter.runtime()
print(json.dumps(sorted(asked)))
"""


def requirement_name(requirement):
    """The normalised distribution name of a requirement string ("keras>=3.15" -> "keras")."""
    return re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_the_base_dependencies_hold_every_package_the_quickstart_imports():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    root = pathlib.Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    base = {requirement_name(r) for r in project["dependencies"]}
    asked = json.loads(subprocess.run(
        [sys.executable, "-c", QUICKSTART_IMPORTS], capture_output=True, text=True, check=True,
        cwd=root, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}).stdout.splitlines()[-1])
    third_party = set(asked) - set(sys.stdlib_module_names) - {"okddip_tf", "__future__"}
    distributions = importlib.metadata.packages_distributions()
    needed = {name: {d.lower().replace("_", "-") for d in distributions.get(name, [name])}
              for name in third_party}
    assert {"ai_edge_litert", "tensorflow", "keras"} <= set(needed)
    missing = {name: dists for name, dists in needed.items() if not dists & base}
    assert not missing, f"imported by the quickstart but not in pyproject's dependencies: {missing}"
