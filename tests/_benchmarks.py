"""Loading a benchmarks/ script as a module, for the tests that run or check its core."""

import importlib.util
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_benchmark(name):
    """benchmarks/<name>.py as a module (its main() is not run)."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
