"""What a group takes as input: `InputSpec` (shape, dtype, name and kind), in plain Python.

A backbone takes one input of one kind, and everything downstream follows from its spec: the
group's shape and dtype checks, whether a pixel normalisation comes first (images only), the
exported signatures' input name and type, the int8 file's input type, and the random probe the
export falls back to. The kinds:

  images     [batch, H, W, C], uint8 or float pixels in [0, 255]          name "images"
  tokens     [batch, T] integer token ids in [0, vocabulary size)         name "token_ids"
  features   [batch, F] float feature vectors (tabular data)              name "features"
  frames     [batch, T, F] float frames (audio, sensor or embedding sequences)   "frames"
  other      any other shape                                              name "inputs"

No Keras or TensorFlow here: the export, the data side and the command line share these checks.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

KINDS = ("images", "tokens", "features", "frames", "other")
DEFAULT_NAMES = {"images": "images", "tokens": "token_ids", "features": "features",
                 "frames": "frames", "other": "inputs"}
INTEGER_DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64")
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
PIXEL_RANGE = (0, 256)


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One example's shape and dtype (the batch axis left out), its name and kind.

    Attributes:
      shape: the per-example shape; None for a dimension of any size (e.g. (None, None, 3)).
      dtype: "float32" for images and float inputs, "int32" for token ids.
      kind: one of `KINDS` (see the module docstring); images get a pixel normalisation.
      name: the input's name in the exported signatures (default: from the kind).
      value_range: (low, high): values must lie in [low, high), e.g. (0, vocabulary size) for
        token ids; None: any value. The export draws random probe inputs in it.
    """

    shape: tuple
    dtype: str = "float32"
    kind: str = "other"
    name: Optional[str] = None
    value_range: Optional[tuple] = None

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(None if d is None else int(d) for d in self.shape))
        if self.kind not in KINDS:
            raise ValueError(f"Unknown input kind {self.kind!r}; choose from {list(KINDS)}.")
        if self.dtype not in INTEGER_DTYPES + FLOAT_DTYPES:
            raise ValueError(f"Unknown input dtype {self.dtype!r}; use one of "
                             f"{list(FLOAT_DTYPES + INTEGER_DTYPES)}.")
        if self.name is None:
            object.__setattr__(self, "name", DEFAULT_NAMES[self.kind])
        if self.value_range is not None:
            object.__setattr__(self, "value_range", tuple(self.value_range))

    @property
    def is_integer(self):
        return self.dtype in INTEGER_DTYPES

    @property
    def is_image(self):
        return self.kind == "images"

    @property
    def fully_defined(self):
        return None not in self.shape

    def describe(self):
        """E.g. "token_ids int32 [batch, 16]"."""
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name} {self.dtype} [batch{', ' if dims else ''}{dims}]"

    def with_shape(self, shape):
        return dataclasses.replace(self, shape=tuple(shape))

    def get_config(self):
        return {"shape": list(self.shape), "dtype": self.dtype, "kind": self.kind,
                "name": self.name,
                "value_range": None if self.value_range is None else list(self.value_range)}

    def check(self, shape, dtype=None):
        """Raises a ValueError saying what was expected and what came, unless a batch of
        `shape` (batch axis first) and `dtype` fits this spec."""
        check_input(self, shape, dtype)


def image_spec(image_shape=None, channels=3):
    """The spec of raw pixel images: (H, W, channels), H and W None when not given."""
    shape = tuple(image_shape) if image_shape else (None, None, channels)
    return InputSpec(shape=shape, dtype="float32", kind="images", value_range=PIXEL_RANGE)


def spec_from(value):
    """An `InputSpec` from an `InputSpec`, its `get_config()` dict, or None (None)."""
    if value is None or isinstance(value, InputSpec):
        return value
    if isinstance(value, dict):
        return InputSpec(**{**value, "shape": tuple(value["shape"])})
    raise TypeError(f"Expected an okddip_tf.inputs.InputSpec or its config dict, got "
                    f"{type(value).__name__}.")


def infer_kind(shape, dtype):
    """The kind of an input of per-example `shape` and `dtype` (see the module docstring)."""
    integer = str(dtype) in INTEGER_DTYPES
    if len(shape) == 3 and (not integer or str(dtype) == "uint8"):
        return "images"
    if len(shape) == 1:
        return "tokens" if integer else "features"
    if len(shape) == 2 and not integer:
        return "frames"
    return "other"


def dtype_name(dtype):
    """A dtype's name ("float32") from a NumPy, TensorFlow or Keras dtype, or a string."""
    name = getattr(dtype, "name", dtype)
    return str(name).replace("tf.", "")


def check_input(spec, shape, dtype=None):
    """See `InputSpec.check`."""
    shape = tuple(None if d is None else int(d) for d in shape)
    got = f"got shape {list(shape)}" + (f" and dtype {dtype_name(dtype)}" if dtype else "")
    expected = f"Expected {spec.describe()}"
    if len(shape) != len(spec.shape) + 1:
        raise ValueError(f"{expected} (rank {len(spec.shape) + 1}), {got}. {rank_hint(spec)}")
    for axis, (want, have) in enumerate(zip(spec.shape, shape[1:]), start=1):
        if want is not None and have is not None and want != have:
            raise ValueError(f"{expected}: axis {axis} must be {want}, {got}. "
                             f"{axis_hint(spec, axis)}")
    if dtype is not None and spec.is_integer and dtype_name(dtype) not in INTEGER_DTYPES:
        raise ValueError(f"{expected}, {got}: {spec.name} hold integers (the backbone reads "
                         "them as ids); cast them with .astype('int32') if they are whole "
                         "numbers, or use a backbone whose input is float.")
    if dtype is not None and dtype_name(dtype) not in INTEGER_DTYPES + FLOAT_DTYPES:
        raise ValueError(f"{expected}, {got}: numbers are needed (encode strings as token ids "
                         "first).")


def rank_hint(spec):
    if spec.is_image:
        return ("Batch single images with images[None] and give grayscale images "
                f"{spec.shape[-1]} channels (e.g. tf.image.grayscale_to_rgb).")
    return "Batch a single example with x[None]; the first axis is the batch."


def axis_hint(spec, axis):
    if spec.is_image and axis == len(spec.shape):
        return (f"Expected {spec.shape[-1]} colour channels in the last axis (channels-last): "
                "convert channels-first images with transpose(0, 2, 3, 1) and grayscale or "
                "RGBA images to RGB.")
    if spec.kind == "tokens":
        return "Pad or truncate every sequence to this length (the model's input length)."
    return "Give every example the shape the backbone's input takes."
