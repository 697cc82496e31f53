"""The `okddip` command.

    okddip train --config=FILE --workdir=DIR [--config.model.temperature=4 ...]
    okddip export --workdir=DIR [--checkpoint=PATH] [--export_dir=DIR] [--overwrite]
    okddip tune --config=FILE --workdir=DIR [--config.tuner.max_trials=20 ...]

Config overrides use ml_collections' syntax on a locked config, so a mistyped key fails. `okddip
export` writes the leader's SavedModel, TFLite files and report (see okddip_tf/export.py).
"""

from absl import app, flags, logging
from ml_collections import config_flags

COMMANDS = ("train", "export", "tune")

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and metrics.")
flags.DEFINE_string("checkpoint", None, "export: a .keras group (default: the workdir's last).")
flags.DEFINE_string("export_dir", None, "export: where to write (default: <workdir>/export).")
flags.DEFINE_string("model_name", "leader", "export: the TF Serving model name.")
flags.DEFINE_integer("model_version", None, "export: version to write (default: latest + 1).")
flags.DEFINE_bool("overwrite", False, "export: replace --model_version (default: the latest).")
flags.DEFINE_list("formats", None, "export: of saved_model,float32,float16,dynamic_int8,int8.")
flags.DEFINE_integer("eval_examples", None, "export: test images for the report (0: none).")
flags.DEFINE_integer("calibration_images", 1000, "export: training images calibrating int8.")
flags.DEFINE_enum("int8_calibration", "percentile", ["percentile", "minmax"],
                  "export: int8 activation ranges: 99.999th percentiles, or TFLite's min/max.")


def main(argv):
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"Usage: okddip {{{'|'.join(COMMANDS)}}} --workdir=DIR ...")
    logging.set_verbosity(logging.WARNING)  # tfds logs every file it opens at INFO
    if argv[1] == "export":
        return export()
    if FLAGS.config is None or FLAGS.workdir is None:
        raise app.UsageError(f"okddip {argv[1]} needs --config=FILE and --workdir=DIR.")
    if argv[1] == "tune":
        from okddip_tf import tuner

        try:
            tuner.search(FLAGS.config, FLAGS.workdir)
        except (ImportError, ValueError) as error:  # a config the search cannot run
            raise SystemExit(f"okddip tune: {error}") from error
        return None
    from okddip_tf import train

    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


def export():
    if FLAGS.workdir is None and FLAGS.checkpoint is None:
        raise app.UsageError("okddip export needs --workdir=DIR or --checkpoint=PATH.")
    from okddip_tf import export as exporting, parity

    try:
        report = exporting.export_workdir(
            FLAGS.workdir, FLAGS.checkpoint, FLAGS.export_dir, model_name=FLAGS.model_name,
            version=FLAGS.model_version, overwrite=FLAGS.overwrite, formats=FLAGS.formats,
            eval_examples=FLAGS.eval_examples, representative_examples=FLAGS.calibration_images,
            int8_calibration=FLAGS.int8_calibration)
    except (OSError, ValueError) as error:  # the messages say what was expected
        raise SystemExit(f"okddip export: {error}") from error
    print(parity.format_report(report))


def run():
    app.run(main)


if __name__ == "__main__":
    run()
