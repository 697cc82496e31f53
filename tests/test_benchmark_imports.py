"""Every okddip_tf name a benchmark script imports exists (a script is run by hand, rarely, so a
moved module would otherwise surface only when someone measures; own_model_stability.py once
imported okddip_tf.machine, which had moved to okddip_tf.reproduce.machine)."""

import ast
import importlib
import pathlib

import pytest

BENCHMARKS = sorted((pathlib.Path(__file__).resolve().parent.parent / "benchmarks").glob("*.py"))


def imported_names(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "okddip_tf":
            yield from ((node.module, alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            yield from ((alias.name, None) for alias in node.names
                        if alias.name.split(".")[0] == "okddip_tf")


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda path: path.name)
def test_the_okddip_tf_names_a_benchmark_imports_exist(path):
    for module_name, name in imported_names(path):
        module = importlib.import_module(module_name)
        if name is not None and not hasattr(module, name):
            importlib.import_module(f"{module_name}.{name}")  # a submodule, or ImportError


def test_a_missing_name_is_found(tmp_path):
    script = tmp_path / "broken.py"
    script.write_text("from okddip_tf import atomic_files, machine\n")
    with pytest.raises(ImportError):
        test_the_okddip_tf_names_a_benchmark_imports_exist(script)
