"""Multiply-adds of one forward pass: one network against the groups train_throughput.py times.

    python benchmarks/operation_counts.py [--backbone=resnet32] [--num_classes=100]

Counts the multiply-adds of every convolution and dense layer of the group's trunks and heads
(the networks the students run; OKDDip's attention, a few small dense layers on the features, is
not counted) from the layers' shapes, for one 32x32 image, for train_throughput.py's variants.
Nothing is timed, so the result does not depend on the machine.
Writes benchmarks/results/operation_counts_<backbone>.json.
"""

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tf_group_step  # noqa: E402  (imports okddip_tf, then TensorFlow)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import okddip_tf  # noqa: E402
# The variants train_throughput.py times, and its --backbone and --num_classes flags.
from train_throughput import VARIANTS  # noqa: E402

FLAGS = flags.FLAGS


COUNTED = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


def layers_of(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from layers_of(layer)
        else:
            yield layer


def multiply_adds(layer, output_shape):
    """Per-image multiply-adds of a Conv2D (depthwise included) or Dense layer's call."""
    kernel = layer.kernel.shape  # Conv2D: (kh, kw, cin/groups, cout); Dense: (in, out)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        per_output = kernel[0] * kernel[1]
    else:
        per_output = int(np.prod(kernel[:-1]))
    return int(np.prod(output_shape[1:])) * per_output


def count(group, models, image_shape):
    """Multiply-adds of the counted layers of `models` in one forward pass of one image.

    The backbones take any image size, so their layers' shapes are known only when they run:
    each counted layer's call is wrapped to record the shape it returns.
    """
    totals = {}
    for model in models:
        for layer in layers_of(model):
            if isinstance(layer, COUNTED):
                def recording(*args, _call=layer.call, _layer=layer, _model=model.name, **kwargs):
                    out = _call(*args, **kwargs)
                    totals[_model] = totals.get(_model, 0) + multiply_adds(_layer, out.shape)
                    return out
                layer.call = recording
    group(np.zeros((1,) + image_shape, np.uint8), training=False)
    return totals


def main(argv):
    del argv
    shape = (32, 32, 3)
    results = {}
    for name, variant in VARIANTS.items():
        keras.utils.set_random_seed(0)
        group = okddip_tf.GroupModel(backbone=FLAGS.backbone, num_classes=FLAGS.num_classes,
                                     image_shape=shape, **variant)
        totals = count(group, [*group.trunks, *group.heads], shape)
        trunks = sum(totals.get(trunk.name, 0) for trunk in group.trunks)
        heads = sum(totals.get(head.name, 0) for head in group.heads)
        results[name] = {"trunks": trunks, "heads": heads, "total": trunks + heads}
    single = results["single"]["total"]
    for row in results.values():
        row["vs_single"] = row["total"] / single
    for name, row in results.items():
        print(f"{name:<22} {row['total']:>14,} multiply-adds  {row['vs_single']:.3f}x")
    tf_group_step.write_json({
        "command": "python benchmarks/operation_counts.py " + " ".join(sys.argv[1:]),
        "machine": tf_group_step.machine(),
        "note": "Multiply-adds per image of the Conv2D and Dense layers of the group's trunks "
                "and heads (attention not counted), from the layer shapes; no timing.",
        "backbone": FLAGS.backbone, "num_classes": FLAGS.num_classes, "image_shape": shape,
        "results": results,
    }, f"operation_counts_{tf_group_step.safe_name(FLAGS.backbone)}.json")


if __name__ == "__main__":
    app.run(main)
