"""A method's teacher, located or trained before its group is built (KD and OKDDip+KD).

A method that needs a teacher says so in its declaration (`MethodSpec.needs_teacher`); its
`kd.teacher` names a finished run or a `.keras` file, or, when empty, `kd.teacher_config` names a
config that is trained first into `<workdir>/teacher/` (a finished teacher there is reused, a
killed one resumes). `okddip train` and `okddip tune` both call `prepare`; the training function
is passed in, so this module sits below the trainer that calls it.
"""

import os

from okddip_tf import methods
from okddip_tf.config import load_config_file
from okddip_tf.errors import ConfigError

TEACHER_DIR = "teacher"


def prepare(config, workdir, train_fn):
    """The method options a run's teacher sets ({} for a method without one).

    Args:
      config: the run's config.
      workdir: the run's workdir; a teacher trained for it goes into `<workdir>/teacher/`.
      train_fn: `train_fn(config, workdir)` trains a config into a workdir (resuming it).

    Returns:
      {"teacher": a workdir or .keras file} for a method that needs a teacher, else {}.
    """
    if not methods.get_spec(config.model.method).needs_teacher:
        return {}
    options = methods.options_from_config(config)
    if options["teacher"]:
        return {"teacher": options["teacher"]}
    if not options["teacher_config"]:
        raise ConfigError(f"model.method={config.model.method!r} needs a teacher: set "
                          "--config.kd.teacher=WORKDIR_OR_FILE or "
                          "--config.kd.teacher_config=configs/FILE.py.")
    teacher_config = load_config_file(options["teacher_config"])
    if methods.get_spec(teacher_config.model.method).needs_teacher:
        raise ConfigError(f"kd.teacher_config={options['teacher_config']!r} trains with "
                          f"{teacher_config.model.method!r}, which needs a teacher itself.")
    with teacher_config.unlocked():
        teacher_config.data.data_dir = teacher_config.data.data_dir or config.data.data_dir
    directory = os.path.join(workdir, TEACHER_DIR)
    print(f"{config.model.method}: training the teacher ({options['teacher_config']}) into "
          f"{directory} first; a finished teacher there is reused.")
    train_fn(teacher_config, directory)
    return {"teacher": directory}
