"""The package's layers (ARCHITECTURE.md), as import-linter contracts and an import-cycle check.

`lint-imports` runs in CI before the tests; these tests check that the contracts hold, that they
catch a breach (a method importing the trainer), and that no import cycle exists anywhere in
okddip_tf when every import statement counts, inside functions too.
"""

import pathlib
import shutil
import subprocess
import sys

import grimp

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def lint_imports(root):
    """`lint-imports` on the package and contracts under `root`: (exit status, its output)."""
    executable = pathlib.Path(sys.executable).parent / "lint-imports"  # beside this Python
    env = {"PATH": str(executable.parent), "PYTHONPATH": str(root)}
    result = subprocess.run([str(executable), "--no-cache"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=300)
    return result.returncode, result.stdout + result.stderr


def cycles(graph, package):
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    modules = sorted(graph.modules)
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(start):
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next((c for c in children if c.startswith(package)), None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])

    for module in modules:
        if module not in index:
            visit(module)
    return found


def test_the_contracts_hold():
    status, output = lint_imports(REPO_ROOT)
    assert status == 0, output
    assert "broken" not in output.lower() or " 0 broken" in output, output


def test_a_method_importing_the_trainer_breaks_a_contract(tmp_path):
    shutil.copytree(REPO_ROOT / "okddip_tf", tmp_path / "okddip_tf")
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    method = tmp_path / "okddip_tf" / "methods" / "dml.py"
    method.write_text(method.read_text() + "\nfrom okddip_tf import train  # noqa: E402,F401\n")
    status, output = lint_imports(tmp_path)
    assert status != 0, output
    assert "okddip_tf.methods.dml -> okddip_tf.train" in output, output


def test_no_import_cycle_anywhere_in_the_package():
    graph = grimp.build_graph("okddip_tf", include_external_packages=False, cache_dir=None)
    assert cycles(graph, "okddip_tf") == []


def test_the_cycle_check_sees_an_import_inside_a_function(tmp_path):
    package = tmp_path / "loop_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from loop_pkg import b\n")
    (package / "b.py").write_text("def late():\n    from loop_pkg import a\n    return a\n")
    sys.path.insert(0, str(tmp_path))
    try:
        graph = grimp.build_graph("loop_pkg", include_external_packages=False, cache_dir=None)
    finally:
        sys.path.remove(str(tmp_path))
    assert cycles(graph, "loop_pkg") == [["loop_pkg.a", "loop_pkg.b"]]
