"""The okddip_tf.data package: its lazy public names, the JAX path without TensorFlow, no cycles."""

import ast
import json
import os
import pathlib
import subprocess
import sys

import pytest

from okddip_tf import data
from okddip_tf.data import epochs, info, pipeline, sources

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "okddip_tf" / "data"

# Imports the package and the JAX path in a fresh process, printing the TensorFlow modules loaded
# after each step; the last step asks for a tf.data name, which must start TensorFlow.
IMPORT_STEPS = r'''
import json, sys


def tensorflow_loaded():
    return sorted(name for name in sys.modules if name.split(".")[0] == "tensorflow")


steps = {}
import okddip_tf.data
from okddip_tf.data import DatasetInfo, KNOWN_PIXEL_STATS, PAD
steps["okddip_tf.data"] = tensorflow_loaded()
import okddip_tf.data.npz, okddip_tf.data.info, okddip_tf.data.download, okddip_tf.data.epochs
steps["okddip_tf.data.npz"] = tensorflow_loaded()
import okddip_tf.data.jax_batches
steps["okddip_tf.data.jax_batches"] = tensorflow_loaded()
okddip_tf.data.make_dataset
steps["okddip_tf.data.make_dataset"] = tensorflow_loaded()
print("STEPS", json.dumps(steps))
'''


def test_the_package_and_the_jax_path_import_no_tensorflow():
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", IMPORT_STEPS], env=env, cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("STEPS "))
    steps = json.loads(line.removeprefix("STEPS "))
    assert steps["okddip_tf.data"] == []
    assert steps["okddip_tf.data.npz"] == []
    assert steps["okddip_tf.data.jax_batches"] == []
    # The check sees TensorFlow when it is there: a tf.data name brings it in.
    assert "tensorflow" in steps["okddip_tf.data.make_dataset"]


@pytest.mark.parametrize("name, module", [
    ("load_datasets", sources), ("make_dataset", pipeline), ("prepare_dataset", pipeline),
    ("augment_image", pipeline), ("compute_pixel_stats", pipeline), ("AUTOTUNE", pipeline),
    ("IMAGE_EXTENSIONS", pipeline), ("PAD", epochs), ("DatasetInfo", info),
    ("KNOWN_PIXEL_STATS", info)])
def test_public_names_are_those_of_the_defining_module(name, module):
    assert getattr(data, name) is getattr(module, name)
    assert name in dir(data)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'load_dataset'"):
        data.load_dataset  # pylint: disable=pointless-statement
    assert not hasattr(data, "_load_tfds")


def imported_data_modules(path):
    """The okddip_tf.data modules that the file imports anywhere, functions included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module == "okddip_tf.data":
            found |= {f"okddip_tf.data.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    modules = {name.split(".")[2] for name in found if name.startswith("okddip_tf.data.")}
    return {module for module in modules if (DATA_DIR / f"{module}.py").exists()}


def test_the_data_modules_import_each_other_without_a_cycle():
    graph = {path.stem: imported_data_modules(path) for path in DATA_DIR.glob("*.py")
             if path.stem != "__init__"}
    assert "epochs" in graph["jax_batches"] and "pipeline" in graph["imagenet"]  # parser check
    done = set()
    while len(done) < len(graph):  # take away the modules whose imports are all taken already
        ready = {module for module, imports in graph.items() if module not in done
                 and imports <= done}
        assert ready, f"import cycle among {sorted(set(graph) - done)}: " + ", ".join(
            f"{module} -> {sorted(graph[module] - done)}" for module in sorted(set(graph) - done))
        done |= ready
