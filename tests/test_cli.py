"""The `okddip` command as a newcomer meets it: help, user errors without tracebacks, a quiet start.

The tests run the installed `okddip` console script (pyproject's entry point) in a subprocess,
with this checkout first on PYTHONPATH and without TF_CPP_MIN_LOG_LEVEL, OKDDIP_VERBOSE or
OKDDIP_TF_LOGS, so they see what a user's shell sees; the last one checks the stderr filter
in-process. Help and argument errors never import TensorFlow (well under a second each); the
errors that need TensorFlow run two at a time in one fixture.
"""

import concurrent.futures
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = "--config=configs/quickstart.py:smoke"
# A line in the format of TensorFlow's C++ logging (e.g. "I0000 00:00:17.. 123 cudart_stub.cc:31]")
# or absl's note that precedes such lines.
TF_CPP_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ \S+\.cc:\d+\]|absl::InitializeLog", re.M)
# The flags `okddip <command> --help` must describe (the list).
COMMAND_FLAGS = {
    "train": ["config", "workdir", "verbose", "tf_logs"],
    "export": ["workdir", "checkpoint", "export_dir", "model_name", "model_version", "overwrite",
               "formats", "eval_examples", "calibration_images", "int8_calibration", "examples",
               "verbose", "tf_logs"],
    "tune": ["config", "workdir", "tuner_id", "oracle", "worker_timeout", "verbose", "tf_logs"],
}


def entry_point():
    script = pathlib.Path(sysconfig.get_path("scripts")) / "okddip"
    found = str(script) if script.is_file() else shutil.which("okddip")
    assert found, "the `okddip` script is missing: install the package (pip install -e .)"
    return found


def user_env(**extra):
    env = {key: value for key, value in os.environ.items()
           if key not in ("TF_CPP_MIN_LOG_LEVEL", "OKDDIP_VERBOSE", "OKDDIP_TF_LOGS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return {**env, **extra}


def okddip(*args, timeout=300, **env):
    return subprocess.run([entry_point(), *args], cwd=REPO_ROOT, env=user_env(**env),
                          capture_output=True, text=True, timeout=timeout, check=False)


def python(code, *args, timeout=300):
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO_ROOT, env=user_env(),
                          capture_output=True, text=True, timeout=timeout, check=False)


def assert_user_error(result, command, status, message):
    """Exit `status`, `message` in a one- or two-line stderr naming the command, no traceback."""
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    prefix = f"okddip {command}: " if command else "okddip: "
    ours = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    assert ours and len(lines) - ours[0] <= 2, result.stderr[-3000:]
    assert message in "\n".join(lines[ours[0]:]), result.stderr[-3000:]
    assert not TF_CPP_LINE.search(result.stderr), result.stderr[-3000:]


def flag_help(stdout, flag):
    """The text `--help` prints for --flag: its line and the indented lines under it."""
    match = re.search(rf"^  --{flag}\b.*\n((?:      .*\n?)*)", stdout, re.M)
    assert match, f"--{flag} is not listed:\n{stdout}"
    return " ".join(match.group(0).split())


def test_tool_help_lists_the_commands_without_starting_tensorflow():
    result = okddip("--help")
    assert result.returncode == 0 and not result.stderr, result.stderr
    for command in COMMAND_FLAGS:
        assert re.search(rf"^  {command}\s+\w", result.stdout, re.M), result.stdout
    assert "okddip <command> --help" in result.stdout and "README" in result.stdout
    # Help is instant: TensorFlow is not imported for it.
    code = ("import sys; from okddip_tf import cli; sys.argv = ['okddip', *sys.argv[1:]]; "
            "cli.run(); print('tensorflow imported:', 'tensorflow' in sys.modules)")
    assert python(code, "train", "--help").stdout.strip().endswith("tensorflow imported: False")


@pytest.mark.parametrize("command", sorted(COMMAND_FLAGS))
def test_command_help_names_its_flags_defaults_and_an_example(command):
    result = okddip(command, "--help")
    assert result.returncode == 0 and not result.stderr, result.stderr
    assert result.stdout.startswith(f"okddip {command}: ")
    for flag in COMMAND_FLAGS[command]:
        assert "(default: " in flag_help(result.stdout, flag)
    assert f"Example:\n  okddip {command} --" in result.stdout
    if "config" in COMMAND_FLAGS[command]:
        assert "--config.<section>.<key>=<value>" in result.stdout
    other = {"export": "--checkpoint", "train": None, "tune": None}[command]
    assert (other is None) or other in result.stdout
    if command != "export":  # export's own flags are not offered where they do nothing
        assert "--checkpoint" not in result.stdout and "--formats" not in result.stdout


def test_help_and_parsing_read_the_same_flag_declarations():
    """Each command's absl flags are made from its declared Flags, and its --help lists exactly
    those (with the value's metavar): one table, not two to keep in step."""
    from okddip_tf import cli  # pylint: disable=import-outside-toplevel

    for name, command in cli.COMMANDS.items():
        declared = [flag.name for flag in command.flags + cli.SHARED]
        assert sorted(cli.flag_values(name)) == sorted(declared)
        shown = re.findall(r"^  --(\w+)", cli.command_help(name), re.M)
        assert shown == declared
        for flag in command.flags:
            assert f"  {flag.usage}\n" in cli.command_help(name)
    assert cli.COMMANDS["reproduce"].flag("seeds").default == cli.flag_values(
        "reproduce")["seeds"].default == 3
    # No --epochs: the budget picks 300, or 2 for --smoke (okddip_tf.reproduce.budget).
    assert cli.flag_values("reproduce")["epochs"].default is None


# Runs the command line in-process and reports whether it imported TensorFlow or Keras.
IMPORT_PROBE = """\
import sys
from okddip_tf import cli
sys.argv = ["okddip", *sys.argv[1:]]
try:
    status = cli.run()
except SystemExit as exit_:
    status = exit_.code
print("imported:", sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "keras"}))
sys.exit(status)
"""


@pytest.mark.parametrize("args, message", [
    (("trian", SMOKE), "okddip: expected one command of train, export, tune, reproduce, got "
     "'trian --config=configs/quickstart.py:smoke' (did you mean `okddip train`?)."),
    (("train", SMOKE, "--workdir=W", "--epochs=1"), "okddip train: --epochs is a flag of "
     "`okddip reproduce`; train takes its epochs from the config: --config.train.epochs=N."),
    (("train", SMOKE, "--workdir=W", "--smoke"), "okddip train: --smoke is a flag of `okddip "
     "reproduce`; a config's smoke size is its argument: --config=FILE:smoke."),
    (("tune", SMOKE, "--workdir=W", "--seeds=2"), "okddip tune: --seeds is a flag of `okddip "
     "reproduce`; tune runs the config's one seed: --config.train.seed=K."),
    (("tune", SMOKE, "--workdir=W", "--checkpoint=x.keras"), "okddip tune: --checkpoint is a "
     "flag of `okddip export`. Run `okddip tune --help` for its flags."),
    (("export", "--workdir=W", "--epochs=3"), "okddip export: --epochs is a flag of `okddip "
     "reproduce`. Run `okddip export --help` for its flags."),
    (("train", "--foo=1"), "okddip train: unknown flag --foo. Run `okddip train --help` for its "
     "flags."),
    (("export", "--workdir=W", "--formts=int8"), "okddip export: unknown flag --formts; did you "
     "mean --formats? Run `okddip export --help` for its flags."),
    (("reproduce", "--experiment=table2", "--workdir=W", "--config.train.epochs=3"),
     "okddip reproduce: --config.train.epochs overrides a config key, and reproduce takes no "
     "config (only `okddip train` and `okddip tune` do). Run `okddip reproduce --help` for its "
     "flags."),
    (("train", "--config", "configs/quickstart.py"), "okddip train: needs --config=FILE[:ARG] "
     "and --workdir=DIR; missing: --workdir. Run `okddip train --help` for its flags."),
    (("train", SMOKE, "--workdir"), "okddip train: --workdir needs a value: --workdir=DIR. Run "
     "`okddip train --help` for its flags."),
    (("train", SMOKE, "--workdir=W", "stray"), "okddip train: unexpected argument 'stray'; "
     "train takes flags only. Run `okddip train --help` for them."),
    (("train", SMOKE, "--workdir=W", "--verbose=maybe"), "okddip train: --verbose=maybe: "
     "--verbose takes true or false. Run `okddip train --help` for its flags."),
    (("reproduce", "--experiment=table2", "--workdir=W", "--parallel=two"),
     "okddip reproduce: --parallel=two: --parallel=N takes a whole number. Run `okddip "
     "reproduce --help` for its flags."),
    (("export", "--workdir=W", "--int8_calibration=max"), "okddip export: flag "
     "--int8_calibration=max: value should be one of <percentile|minmax>"),
    (("train", SMOKE, "--workdir=W", "--config.data.batch_size=None"), "okddip train: "
     "--config.data.batch_size=None: data.batch_size needs a value (default 128); None unsets "
     "only the keys whose default is None, e.g. data.train_examples."),
    (("train", "--config=okddip_tf/config.py", "--workdir=W"), "okddip train: "
     "--config=okddip_tf/config.py: the file defines no get_config(arg=None), the function that "
     "returns the config; pass one of configs/ (e.g. configs/quickstart.py)"),
])
def test_usage_errors_answer_in_one_line_before_tensorflow(args, message, tmp_path):
    """A command takes only its own flags; every usage error is one line on stderr, exit
    status 2, with neither TensorFlow nor Keras imported (so no start-up log line either)."""
    args = [arg.replace("--workdir=W", f"--workdir={tmp_path / 'w'}") for arg in args]
    result = python(IMPORT_PROBE, *args, timeout=60)
    assert not (tmp_path / "w").exists()
    assert result.returncode == 2, result.stderr
    assert result.stdout.splitlines()[-1] == "imported: []", result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr


# Parses an `okddip train` command line in-process and prints three of the config's keys.
PARSE_PROBE = """\
import json, sys
from okddip_tf import cli
sys.argv = ["okddip", *sys.argv[1:]]
data = cli.parse_flags("train", sys.argv, False).config.data
print(json.dumps([data.train_examples, data.shuffle_buffer, data.batch_size]))
"""


@pytest.mark.parametrize("override, parsed", [
    (["--config.data.train_examples=None"], [None, 25_000, 64]),
    (["--config.data.train_examples", "none"], [None, 25_000, 64]),
    ([], [25_000, 25_000, 64]),
])
def test_none_unsets_a_key_whose_default_is_none(override, parsed):
    """quickstart.py sets data.train_examples=25000; `=None` (the key's default) restores the
    whole split, as ml_collections alone cannot (it parses "None" as an int); the file's other
    settings and the other overrides still apply."""
    result = python(PARSE_PROBE, "train", "--config=configs/quickstart.py", "--workdir=w",
                    *override, "--config.data.batch_size=64", timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == parsed


def test_shared_flags_and_space_separated_values_are_accepted(tmp_path):
    """--verbose and --tf_logs belong to every command; `--flag VALUE` is `--flag=VALUE`."""
    result = okddip("train", "--config", "configs/quickstart.py:smoke", "--workdir",
                    str(tmp_path / "w"), "--noverbose", "--notf_logs", "--config.train.epochs",
                    "0")
    assert_user_error(result, "train", 2, "train.epochs must be >= 1")


def test_export_help_shows_real_defaults():
    result = okddip("export", "--help")
    assert "(default: 1000)" in flag_help(result.stdout, "calibration_images")
    assert "(default: percentile)" in flag_help(result.stdout, "int8_calibration")
    assert "(default: leader)" in flag_help(result.stdout, "model_name")


def test_helpfull_still_lists_every_flag():
    result = okddip("--helpfull")
    assert result.returncode == 0
    assert "--flagfile" in result.stdout and "--int8_calibration" in result.stdout


def test_no_command_prints_our_usage_only():
    result = okddip()
    assert_user_error(result, "", 2, "expected one command of train, export, tune")
    assert "USAGE:" not in result.stderr and "helpfull" not in result.stderr


@pytest.mark.parametrize("args, command, status, message", [
    (("frobnicate",), "", 2, "got 'frobnicate'"),
    (("train", SMOKE), "train", 2, "needs --config=FILE[:ARG] and --workdir=DIR; missing: "
                                   "--workdir"),
    (("export",), "export", 2, "needs --workdir=DIR"),
    (("train", SMOKE, "--workdir=W", "--no_such_flag=1"), "train", 2,
     "unknown flag --no_such_flag"),
    (("train", "--config=configs/no_such_config.py", "--workdir=W"), "train", 2,
     "--config=configs/no_such_config.py: no such file"),
    (("train", "--config=configs/quickstart.py:smok", "--workdir=W"), "train", 2,
     "Unknown config argument 'smok'"),
    (("train", SMOKE, "--workdir=W", "--config.model.temprature=2"), "train", 2,
     'the config has no such key. Did you mean "temperature"'),
    (("tune", SMOKE, "--workdir=W", "--config.train.epochs=abc"), "tune", 2,
     "--config.train.epochs=abc"),
    (("train", SMOKE, "--workdir=W", "--config.train.epochs=0"), "train", 2,
     "train.epochs must be >= 1"),
    (("train", SMOKE, "--workdir=W", "--config.data.no_such=None"), "train", 2,
     "--config.data.no_such: the config has no such key."),
])
def test_argument_and_config_errors_are_one_message(args, command, status, message, tmp_path):
    args = [arg.replace("--workdir=W", f"--workdir={tmp_path / 'w'}") for arg in args]
    result = okddip(*args)
    assert_user_error(result, command, status, message)
    assert not (tmp_path / "w").exists()


def test_verbose_and_its_environment_variable_show_the_traceback(tmp_path):
    args = ["train", SMOKE, f"--workdir={tmp_path}", "--config.train.epochs=0"]
    for result in (okddip(*args, "--verbose"), okddip(*args, OKDDIP_VERBOSE="1")):
        assert result.returncode == 2
        assert "Traceback" in result.stderr and "ConfigError" in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("okddip train: Invalid config")


def test_a_bug_keeps_its_traceback(tmp_path):
    """A plain ValueError where only user errors were expected is a bug: it is not hidden."""
    code = ("import sys\nfrom okddip_tf import cli, config\n"
            "def broken(cfg):\n    raise ValueError('a bug, not a user error')\n"
            "config.validate_config = broken\n"
            "sys.argv = ['okddip', *sys.argv[1:]]\nsys.exit(cli.run())\n")
    result = python(code, "train", SMOKE, f"--workdir={tmp_path}")
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "ValueError: a bug, not a user error" in result.stderr


def test_a_config_file_that_crashes_keeps_its_traceback(tmp_path):
    """Only ml_collections' unknown-key error becomes a message; a config file's own bug is not."""
    path = tmp_path / "broken.py"
    path.write_text("def get_config(arg=None):\n    return None.model\n")
    result = okddip("train", f"--config={path}", f"--workdir={tmp_path / 'w'}")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "AttributeError" in result.stderr


@pytest.fixture(scope="module")
def tf_runs(tmp_path_factory):
    """The errors that need TensorFlow (or tfds), run two at a time: name -> result."""
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "empty_data_dir").mkdir()
    (tmp / "a_file").write_text("")
    (tmp / "garbage.keras").write_bytes(b"not a zip file")
    runs = {
        "backbone": ("train", SMOKE, "--config.model.backbone=resnet9"),
        "method": ("train", SMOKE, "--config.model.method=okdd"),
        "group_size": ("train", SMOKE, "--config.model.num_students=1"),
        "dataset": ("train", SMOKE, "--config.data.name=cifar1000",
                    f"--config.data.data_dir={tmp / 'empty_data_dir'}"),
        "not_prepared": ("train", SMOKE, f"--config.data.data_dir={tmp / 'empty_data_dir'}"),
        "workdir": ("train", SMOKE, f"--workdir={tmp / 'a_file' / 'run'}",
                    f"--config.data.data_dir={tmp / 'empty_data_dir'}"),
        "checkpoint": ("export", f"--checkpoint={tmp / 'garbage.keras'}"),
        "tf_logs": ("export", f"--checkpoint={tmp / 'garbage.keras'}", "--tf_logs"),
    }

    def run(name):
        args = list(runs[name])
        if args[0] == "train" and not any(a.startswith("--workdir=") for a in args):
            args.append(f"--workdir={tmp / name}")
        return name, okddip(*args, timeout=240, TFDS_DATA_DIR=str(tmp / "empty_data_dir"))

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, runs))


@pytest.mark.parametrize("name, command, status, message", [
    ("backbone", "train", 2, "Unknown backbone 'resnet9'. Known backbones: ["),
    ("method", "train", 2, "Unknown method 'okdd'. Known methods: ["),
    ("group_size", "train", 2, "Method 'okddip' needs num_students between 2 and"),
    ("dataset", "train", 2, "tfds does not know a dataset named 'cifar1000'. Close matches: "
                            "cifar100"),
    ("not_prepared", "train", 1, "tfds dataset 'cifar100' is not prepared in data_dir"),
    ("workdir", "train", 1, "Choose a writable --workdir"),
    ("checkpoint", "export", 1, "as a Keras model"),
])
def test_user_errors_past_tensorflow_are_one_message_and_start_quietly(tf_runs, name, command,
                                                                        status, message):
    assert_user_error(tf_runs[name], command, status, message)


def test_tf_logs_brings_tensorflow_start_up_lines_back(tf_runs):
    result = tf_runs["tf_logs"]
    assert result.returncode == 1 and "okddip export: " in result.stderr
    assert TF_CPP_LINE.search(result.stderr), result.stderr[-3000:]
    assert not TF_CPP_LINE.search(tf_runs["checkpoint"].stderr)


def test_notices_are_dropped_only_when_quiet_and_other_lines_kept(capfd, monkeypatch):
    """In-process: what `okddip export` wraps its TFLite conversions in."""
    from okddip_tf import quiet  # pylint: disable=import-outside-toplevel

    notice = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
    with quiet.notices_dropped():  # the library alone: nothing is dropped
        os.write(2, notice)
    monkeypatch.setattr(quiet, "_quiet", True)
    with pytest.raises(RuntimeError, match="converter crashed"):
        with quiet.notices_dropped():
            os.write(2, notice + b"fully_quantize: 0, inference_type: 6, input_inference_type: "
                     b"UINT8\na real warning\n")
            raise RuntimeError("converter crashed")
    err = capfd.readouterr().err
    assert err.count("XNNPACK") == 1 and "fully_quantize" not in err
    assert err.endswith("a real warning\n")
