"""The `okddip` command: `okddip train --config=FILE --workdir=DIR` (plus config overrides).

Config overrides use ml_collections' syntax on a locked config, so a mistyped key fails:
    okddip train --config=configs/quickstart.py --workdir=runs/q --config.model.temperature=4
"""

import os

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) hides the progress bars.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

COMMANDS = ("train", "tune")

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and metrics.")


def main(argv):
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"Usage: okddip {{{'|'.join(COMMANDS)}}} --config=FILE --workdir=DIR")
    if FLAGS.config is None or FLAGS.workdir is None:
        raise app.UsageError(f"okddip {argv[1]} needs --config=FILE and --workdir=DIR.")
    logging.set_verbosity(logging.WARNING)  # tfds logs every file it opens at INFO
    if argv[1] == "tune":
        from okddip_tf import tuner

        try:
            tuner.search(FLAGS.config, FLAGS.workdir)
        except (ImportError, ValueError) as error:  # a config the search cannot run
            raise SystemExit(f"okddip tune: {error}") from error
        return None
    from okddip_tf import train

    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
