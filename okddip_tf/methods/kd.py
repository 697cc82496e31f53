"""Classic knowledge distillation (Hinton et al. 2015) from a frozen, pretrained teacher.

As the authors' `train_kd.py` runs it: one student, loss CE(z_s) + alpha * KL_T(z_t || z_s) with
alpha = 1 and T = 3 (T^2 included), the teacher in inference mode and out of the gradient. The
paper's teacher (Table 6) is the bottleneck ResNet-110 baseline; the KD configs name a config that
trains it (`kd.teacher_config`), which `okddip train` runs first into `<workdir>/teacher/` unless
`kd.teacher` names a finished run or a `.keras` file.

The teacher is saved inside the student's checkpoints (its architecture in the group's config, its
weights frozen), so a KD run resumes and exports without the teacher's files.
"""

import os

import keras
from keras import ops

from okddip_tf import losses
from okddip_tf.errors import ConfigError, MissingInputError
from okddip_tf.methods import base

SECTION = {"kd": {
    "teacher": "",  # an okddip_tf workdir or a .keras file; "" trains kd.teacher_config first
    "teacher_config": "",  # "configs/FILE.py[:arg]": trained into <workdir>/teacher/
    "alpha": 1.0,  # the weight of the teacher's KL term
}}


class KD(base.Method):
    """One student distilling from a frozen teacher (the paper's "KD", Table 6).

    Options (`config.kd.*`): `teacher` (an `okddip train` workdir, whose deployed student is the
    teacher, or a `.keras` file of a group or of any model mapping raw images to logits),
    `teacher_config` (used when `teacher` is empty) and `alpha`.
    """

    name = "kd"
    sections = SECTION
    terms = ("leader_ce", "teacher_kd")
    uses_temperature = True
    min_students = max_students = 1
    tuner_knobs = (base.TunerKnob("kd_alpha", "kd.alpha", "range", ()),)
    deployed = "the student"

    def __init__(self, teacher_model=None, **options):
        super().__init__(**options)
        self.teacher_model = teacher_model  # the teacher's architecture once built (saving)

    def check_options(self):
        check_kd_options(self.options)

    def get_config(self):
        return {**super().get_config(), "teacher_model": self.teacher_model}

    def build_layers(self, context):
        self.teacher, self.teacher_model = build_teacher(
            self.options["teacher"], self.teacher_model, context.num_classes)
        return {"teacher": self.teacher}

    def outputs(self, students, training):
        return {"teacher_logits": teacher_logits(self.teacher, students.images)}

    def loss(self, labels, outputs, *, temperature, distill_weight):
        leader_ce = losses.cross_entropy(labels, outputs["leader_logits"])
        teacher_kd = distill_from_teacher(outputs, [outputs["leader_logits"]], temperature)
        alpha = ops.cast(self.options["alpha"], leader_ce.dtype)
        return {"loss": leader_ce + alpha * teacher_kd, "leader_ce": leader_ce,
                "teacher_kd": teacher_kd}

    def prepare(self, config, workdir):
        return prepare_teacher(self.options, config, workdir)


def check_kd_options(options):
    if not options["alpha"] >= 0:
        raise ConfigError(f"kd.alpha must be >= 0, got {options['alpha']}.")


def teacher_logits(teacher, images):
    """The teacher's logits in inference mode, out of the gradient: [B, C] float32."""
    return ops.stop_gradient(ops.cast(teacher(images, training=False), "float32"))


def distill_from_teacher(outputs, student_logits, temperature):
    """Sum over the given students of KL_T(softmax(z_t / T) || student), T^2 included."""
    target = ops.softmax(outputs["teacher_logits"] / temperature, axis=-1)
    return sum(losses.distillation_kl(target, logits, temperature) for logits in student_logits)


def checkpoint_of(teacher):
    """The `.keras` file a `kd.teacher` value names (a workdir's last checkpoint or the file)."""
    if os.path.isdir(teacher):
        path = os.path.join(teacher, "checkpoints", "last.keras")
        if not os.path.isfile(path):
            raise MissingInputError(
                f"kd.teacher={teacher!r} is a folder without checkpoints/last.keras: name a "
                "finished `okddip train` workdir or a .keras file.")
        return path
    if not os.path.isfile(teacher):
        raise MissingInputError(
            f"kd.teacher={teacher!r} does not exist: name a finished `okddip train` workdir or a "
            ".keras file, or leave it empty to train kd.teacher_config first.")
    return teacher


def load_teacher(teacher):
    """The frozen teacher network from a `kd.teacher` value (a group's deployed student)."""
    from okddip_tf.group import GroupModel  # pylint: disable=import-outside-toplevel

    model = keras.saving.load_model(checkpoint_of(teacher), compile=False)
    return model.leader if isinstance(model, GroupModel) else model


def build_teacher(teacher, teacher_model, num_classes):
    """(frozen teacher model, its serialised architecture) from a saved architecture or a path."""
    if teacher_model is not None:
        model = keras.saving.deserialize_keras_object(teacher_model)
    elif teacher:
        model = load_teacher(teacher)
    else:
        raise ConfigError("KD needs a teacher: set --config.kd.teacher=WORKDIR_OR_FILE (or "
                          "kd.teacher_config, a config `okddip train` trains first).")
    classes = model.outputs[0].shape[-1] if getattr(model, "outputs", None) else None
    if classes != num_classes:
        raise ConfigError(f"The teacher ({teacher or 'saved'}) predicts {classes} classes; this "
                          f"group has {num_classes}. Train the teacher on the same dataset.")
    model.trainable = False
    return model, keras.saving.serialize_keras_object(model)


def prepare_teacher(options, config, workdir):
    """Trains `kd.teacher_config` into `<workdir>/teacher/` when no teacher is named."""
    if options["teacher"]:
        return {"teacher": options["teacher"]}
    if not options["teacher_config"]:
        raise ConfigError("KD needs a teacher: set --config.kd.teacher=WORKDIR_OR_FILE or "
                          "--config.kd.teacher_config=configs/FILE.py.")
    # Imported here: training imports the group, which imports the methods.
    from okddip_tf import train  # pylint: disable=import-outside-toplevel
    from okddip_tf.config import load_config_file  # pylint: disable=import-outside-toplevel

    teacher_config = load_config_file(options["teacher_config"])
    if teacher_config.model.method in ("kd", "okddip_kd"):
        raise ConfigError(f"kd.teacher_config={options['teacher_config']!r} trains with "
                          f"{teacher_config.model.method!r}, which needs a teacher itself.")
    with teacher_config.unlocked():
        teacher_config.data.data_dir = teacher_config.data.data_dir or config.data.data_dir
    directory = os.path.join(workdir, "teacher")
    print(f"KD: training the teacher ({options['teacher_config']}) into {directory} first; "
          "a finished teacher there is reused.")
    train.train_and_evaluate(teacher_config, directory)
    return {"teacher": directory}
