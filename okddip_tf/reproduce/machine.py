"""What a measurement ran on: the CPU's model and vector extensions (they decide the kernels),
the machine's GPUs, and the commit of the code that measured."""

import glob
import os
import platform
import subprocess
import sys

from okddip_tf import compat


def cpu_kind():
    """The CPU's model name and kind: "AVX-512 + BF16", "AVX-512", "AVX2" (from /proc/cpuinfo).

    The CPU machines a measurement may run on are of either kind, and TensorFlow picks
    different convolution kernels for each, so every timing records this.
    """
    flags, model = set(), platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
                elif line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
    except OSError:  # not Linux: the kind is unknown
        pass
    avx512 = sorted(flag for flag in flags if flag.startswith("avx512"))
    kind = ("AVX-512" + (" + BF16" if "avx512_bf16" in flags else "") if avx512
            else "AVX2" if "avx2" in flags else "unknown vector extensions")
    return {"model_name": model, "kind": kind, "avx2": "avx2" in flags, "avx512_flags": avx512,
            "amx": sorted(flag for flag in flags if flag.startswith("amx"))}


def gpu_names():
    """The NVIDIA GPUs of this machine by model name ([] where there are none), read without a
    framework: from the driver's /proc files, else from `nvidia-smi`.

    `okddip reproduce` records them beside the CPU of every sitting: a cell trained on a GPU
    must say so, and the parent process that records it starts no framework.
    """
    names = []
    for path in sorted(glob.glob("/proc/driver/nvidia/gpus/*/information")):
        try:
            with open(path, encoding="utf-8") as f:
                names += [line.split(":", 1)[1].strip() for line in f
                          if line.startswith("Model:")]
        except OSError:
            continue
    if names:
        return names
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines()
            if line.strip()] if out.returncode == 0 else []


def describe():
    """The machine and software a measurement ran on, for a benchmark's JSON.

    Framework versions are recorded for the frameworks already imported (nothing is imported
    here), and oneDNN's state for TensorFlow: its CPU kernels differ with TF_ENABLE_ONEDNN_OPTS,
    which okddip_tf sets to 1 unless the environment says otherwise.
    """
    found = {"processor": platform.processor() or platform.machine(), "cpu": cpu_kind(),
             "cpu_count": os.cpu_count(), "python": platform.python_version()}
    found.update({name: sys.modules[name].__version__ for name in ("tensorflow", "keras", "jax")
                  if name in sys.modules})
    if "tensorflow" in sys.modules:
        found["TF_ENABLE_ONEDNN_OPTS"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset")
        found["onednn_in_use"] = onednn_in_use()
    return found


def onednn_in_use():
    """Whether the loaded TensorFlow runs its oneDNN kernels (the env var, or its own default).

    Raises compat.PrivateAPIChanged where TensorFlow no longer answers this privately: a benchmark
    must not record a silent None for the kernels it timed.
    """
    return compat.onednn_enabled()


def _git(directory, *args):
    """`git ARGS` at `directory`: its output, or None where git fails or is missing."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=directory,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_commit(directory):
    """The short hash of the commit checked out at `directory`, or None outside a git checkout."""
    return (_git(directory, "rev-parse", "--short", "HEAD") or "").strip() or None


def git_tree_changed(directory):
    """Whether tracked files at `directory` differ from its commit (which is then only the base
    of what ran), or None outside a git checkout."""
    out = _git(directory, "status", "--porcelain", "--untracked-files=no")
    return None if out is None else bool(out.strip())
