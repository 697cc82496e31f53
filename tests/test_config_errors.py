"""A config error answers before Keras or TensorFlow load: the config and the methods'
declarations it reads are plain data (okddip_tf/config.py, okddip_tf/methods/specs.py)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from okddip_tf import config as base
from okddip_tf import methods
from okddip_tf.errors import ConfigError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Runs the `okddip` entry point in this process and reports, as the last stdout line, its exit
# status and which heavy packages were imported by then.
PROBE = """
import json, sys
from okddip_tf import cli
sys.argv = ["okddip", *sys.argv[1:]]
try:
    cli.run()
    status = 0
except SystemExit as exit_:
    status = exit_.code
loaded = sorted(name for name in ("tensorflow", "keras", "jax") if name in sys.modules)
print(json.dumps({"status": status, "loaded": loaded}))
"""


def probe(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


@pytest.mark.parametrize("override, message", [
    ("--config.train.epochs=0", "train.epochs must be >= 1"),
    ("--config.train.epoch=3", "--config.train.epoch: the config has no such key"),
    ("--config.model.method=okdip", "Unknown method 'okdip'"),
    ("--config.model.num_students=9", "needs num_students between 2 and 8"),
])
def test_a_config_error_exits_2_before_keras_or_tensorflow_load(override, message, tmp_path):
    report, stderr = probe("train", "--config=configs/quickstart.py", f"--workdir={tmp_path}",
                           override)
    assert report == {"status": 2, "loaded": []}, stderr[-3000:]
    assert message in stderr and "Traceback" not in stderr, stderr[-3000:]
    assert len(stderr.strip().splitlines()) <= 2, stderr  # the error, and where to look


def test_loading_every_config_file_imports_no_keras():
    code = ("import sys, glob; from okddip_tf.config import load_config_file\n"
            "for path in sorted(glob.glob('configs/*.py')):\n"
            "    load_config_file(path)\n"
            "print(sorted(m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"


def test_the_declarations_are_what_the_implementations_run():
    """Each method class carries its declaration, and the config has a section per option."""
    config = base.get_base_config()
    for name, spec in methods.SPECS.items():
        cls = methods.get_method_class(name)
        assert cls.name == name and cls.spec is spec
        assert (cls.min_students, cls.max_students, cls.distills) == (
            spec.min_students, spec.max_students, spec.distills)
        method = cls()
        assert set(method.options) == set(spec.options)
        for section, options in spec.sections.items():
            for key, default in options.items():
                assert config[section][key] == default
        for knob in spec.tuner_knobs:
            assert config.tuner[knob.name] == knob.default


def test_only_the_declarations_name_the_methods_that_need_a_teacher():
    """Nothing in the package picks out KD by name: a method declares that it needs a teacher."""
    needing = {name for name, spec in methods.SPECS.items() if spec.needs_teacher}
    assert needing == {"kd", "okddip_kd"}
    allowed = {pathlib.Path("methods", "specs.py"), pathlib.Path("methods", "kd.py"),
               pathlib.Path("methods", "okddip_kd.py"),
               pathlib.Path("reproduce", "manifest.py")}  # the paper's Table 6 rows
    package = REPO_ROOT / "okddip_tf"
    for path in package.rglob("*.py"):
        if path.relative_to(package) in allowed:
            continue
        text = path.read_text()
        for name in needing:
            assert f'"{name}"' not in text and f"'{name}'" not in text, (path, name)


def test_unknown_method_options_are_refused_by_name():
    with pytest.raises(ConfigError, match=r"has no option\(s\) \['atention'\]"):
        methods.specs.check_options(methods.get_spec("okddip"), {"atention": "mean"})

