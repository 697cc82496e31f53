"""How the full-integer int8 file's calibration changes its agreement with the Keras leader.

    python benchmarks/int8_calibration.py --workdir=RUN [--name=NAME]

For the leader of an `okddip train` workdir, on its whole evaluation split: converts the int8
file with TFLite's own min/max ranges and with each --percentiles range
(okddip_tf/deploy/calibration.py) on the first --calibration_images training images, and reports top-1 agreement with the Keras
leader (also on the images whose top-2 logit gap exceeds 1, 2 or 4 int8 output steps), accuracy
and conversion time of each. For context it also reports the leader's top-2
logit margins and the agreement left if only the int8 *output* were rounded (the float logits
quantised with the file's output scale): the ceiling that no activation range can lift.
Writes benchmarks/results/int8_calibration_<name>.json.
"""

import datetime
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from okddip_tf import atomic_files  # noqa: E402  (first: the oneDNN default)
from okddip_tf.reproduce import machine  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from okddip_tf.deploy import export, interpreter, parity, tflite  # noqa: E402

flags.DEFINE_string("workdir", None, "An `okddip train` workdir.", required=True)
flags.DEFINE_string("name", None, "Result name (default: the workdir's basename).")
flags.DEFINE_list("percentiles", ["99.99", "99.999", "100"], "Percentile ranges to compare.")
flags.DEFINE_list("calibration_images", ["1000"], "Calibration set sizes to compare.")
FLAGS = flags.FLAGS
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def output_rounding_ceiling(reference, scale, zero_point):
    """Top-1 agreement if only the float logits were rounded to the int8 output grid."""
    quantised = np.clip(np.round(reference / scale) + zero_point, -128, 127)
    return float(np.mean(quantised.argmax(-1) == reference.argmax(-1)))


def agreement_by_margin(logits, reference, scale, steps=(1, 2, 4)):
    """Agreement on the images whose float top-2 logit gap exceeds k int8 output steps, and
    the share of images that are."""
    agree = logits.argmax(-1) == reference.argmax(-1)
    result = {}
    for k in steps:
        clear = parity.clear_margin(agree, reference, scale, k)
        result[f"gap_over_{k}_steps"] = {key: clear[key]
                                         for key in ("share_of_images", "top1_agreement")}
    return result


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    config = atomic_files.read_json(os.path.join(FLAGS.workdir, "config.json"))
    group = export.load_group(os.path.join(FLAGS.workdir, "checkpoints", "last.keras"))
    sizes = sorted(int(n) for n in FLAGS.calibration_images)
    representative, images, labels = export.load_export_data(config["data"], max(sizes), None)
    reference = group.leader.predict(images.astype(np.float32), batch_size=256, verbose=0)
    workdir = os.path.relpath(FLAGS.workdir, REPO_ROOT)
    if workdir.startswith(".."):  # a run outside the repository: its path means nothing here
        workdir = "RUN"
    result = {
        "command": " ".join(["python benchmarks/int8_calibration.py", f"--workdir={workdir}",
                             *(a for a in sys.argv[1:] if not a.startswith("--workdir"))]),
        "workdir_config": {"backbone": config["model"]["backbone"],
                           "method": config["model"]["method"],
                           "epochs": config["train"]["epochs"],
                           "drop_epochs": config["optim"]["drop_epochs"]},
        "test_images": len(images),
        "keras_accuracy": float(np.mean(reference.argmax(-1) == labels)),
        "top2_logit_margin_quantiles": dict(zip(
            ["1%", "5%", "10%", "50%"],
            np.quantile(parity.top2_gap(reference), [0.01, 0.05, 0.1, 0.5]).round(4).tolist())),
        "runs": [],
    }
    settings = [("minmax", None)] + [("percentile", float(p)) for p in FLAGS.percentiles]
    with tempfile.TemporaryDirectory() as directory:
        tflite.write_conversion_model(group.leader, images.shape[1:], directory)
        for count in sizes:
            for method, percentile in settings:
                start = time.perf_counter()
                content = tflite.convert(directory, "int8", representative[:count],
                                         int8_calibration=method,
                                         percentile=percentile or 100.0)
                seconds = time.perf_counter() - start
                classifier = tflite.TFLiteClassifier(model_content=content)
                logits = classifier.predict(images)["logits"]
                scale, zero_point = classifier.output_details["logits"]["quantization"]
                run = {"calibration_images": count, "method": method, "percentile": percentile,
                       "top1_agreement": float(np.mean(logits.argmax(-1) ==
                                                       reference.argmax(-1))),
                       "accuracy": float(np.mean(logits.argmax(-1) == labels)),
                       "output_scale": float(scale),
                       "output_rounding_ceiling": output_rounding_ceiling(reference, scale,
                                                                          zero_point),
                       "agreement_by_margin": agreement_by_margin(logits, reference, scale),
                       "conversion_seconds": round(seconds, 1)}
                result["runs"].append(run)
                print(json.dumps(run))
    result["machine"] = {**machine.describe(),
                         "tflite_interpreter": interpreter.describe(),
                         # other work on the machine slows conversion_seconds, nothing else
                         "load_average_1min_at_end": round(os.getloadavg()[0], 2)}
    result["date"] = datetime.date.today().isoformat()
    name = FLAGS.name or os.path.basename(os.path.normpath(FLAGS.workdir))
    path = os.path.join(os.path.dirname(__file__), "results", f"int8_calibration_{name}.json")
    atomic_files.write_json(path, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
