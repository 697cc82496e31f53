"""How an exported artefact compares with the Keras leader, and the report's summary table."""

import numpy as np

CLEAR_MARGIN_STEPS = 2


def pick_probe(eval_images, eval_labels, representative_images, spec):
    """The inputs parity (and accuracy, with labels) is measured on: evaluation inputs, else
    representative ones, else 64 random inputs of `spec` (an `InputSpec`)."""
    kind = "images" if spec.is_image else "inputs"
    if eval_images is not None and len(eval_images):
        labels = None if eval_labels is None else np.asarray(eval_labels)
        return np.asarray(eval_images), labels, f"evaluation {kind}"
    if representative_images is not None and len(representative_images):
        return np.asarray(representative_images), None, f"representative (training) {kind}"
    return random_inputs(spec, 64), None, "random pixels" if spec.is_image else "random inputs"


def random_inputs(spec, count, seed=0):
    """`count` random inputs of `spec`: uniform integers in its value range (pixels, token
    ids; [0, 2) when it has none), else standard normal floats."""
    rng = np.random.default_rng(seed)
    shape = (count,) + tuple(spec.shape)
    if spec.is_image:
        return rng.integers(0, 256, shape, np.uint8)
    if spec.is_integer:
        low, high = spec.value_range or (0, 2)
        return rng.integers(low, high, shape).astype(spec.dtype)
    return rng.standard_normal(shape).astype(np.float32)


def compare(outputs, reference, labels, output_step=None):
    """Agreement with the Keras leader's top-1, accuracy, and max |difference|; all None, with
    `parity: "unmeasured"` and the reason, when either side holds NaN or infinite values.

    With `output_step` (the logits' quantisation step of an integer file) also the agreement
    on the images the file can tell apart: those whose two largest float logits differ by
    more than `CLEAR_MARGIN_STEPS` steps (nearer ones may round to a tie).
    """
    logits = outputs["logits"]
    broken = [name for name, values in (("the artefact's logits", logits),
                                         ("its probabilities", outputs["probabilities"]),
                                         ("the Keras leader's logits", reference))
              if not np.isfinite(values).all()]
    if broken:  # a NaN difference is not agreement: nothing is measured
        return {"parity": "unmeasured", "unmeasured_because": f"{' and '.join(broken)} hold NaN "
                "or infinite values", "top1_agreement": None, "accuracy": None,
                "max_abs_probability_diff": None, "max_abs_logit_diff": None}
    expected = np.exp(reference - reference.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    agree = logits.argmax(-1) == reference.argmax(-1)
    result = {"top1_agreement": float(np.mean(agree)),
              "accuracy": accuracy(logits, labels),
              "max_abs_probability_diff": float(np.abs(outputs["probabilities"] - expected).max()),
              "max_abs_logit_diff": float(np.abs(logits - reference).max())}
    if output_step:
        result["clear_margin"] = clear_margin(agree, reference, output_step, CLEAR_MARGIN_STEPS)
    return result


def top2_gap(logits):
    """The gap between each row's two largest logits."""
    top2 = np.sort(logits, -1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def clear_margin(agree, reference, output_step, steps):
    """Agreement (`agree`: per image) on the images whose top-2 reference gap exceeds `steps`
    output steps, and the share of images that do."""
    clear = top2_gap(reference) > steps * output_step
    return {"output_step": float(output_step), "steps": steps,
            "share_of_images": float(np.mean(clear)),
            "top1_agreement": float(np.mean(agree[clear])) if clear.any() else None}


def accuracy(logits, labels):
    return None if labels is None else float(np.mean(logits.argmax(-1) == labels))


def format_report(report):
    """A small table of the artefacts: size, agreement with Keras, accuracy, max |dprob|."""
    evaluation = report["evaluation"]
    rows = [f"Exported {report['model_name']} version {report['version']} to "
            f"{report.get('directory', '.')}",
            f"parameters {report['parameters']['leader']:,}; parity on {evaluation['count']} "
            f"{evaluation['images']}; Keras accuracy {percent(evaluation['keras_accuracy'])}",
            f"{'artefact':<14}{'size':>12}{'top-1 agree':>13}{'accuracy':>10}{'max|dprob|':>12}"]
    for name, row in report["artefacts"].items():
        rows.append(f"{name:<14}{size(row['size_bytes']):>12}{percent(row['top1_agreement']):>13}"
                    f"{percent(row['accuracy']):>10}"
                    f"{scientific(row['max_abs_probability_diff']):>12}")
    return "\n".join(rows)


def percent(value):
    return "n/a" if value is None else f"{100 * value:.2f}%"


def scientific(value):
    return "unmeasured" if value is None else f"{value:.2e}"


def size(num_bytes):
    return f"{num_bytes / 2**20:.2f} MiB" if num_bytes >= 2**20 else f"{num_bytes / 2**10:.1f} KiB"
