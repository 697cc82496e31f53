"""A frozen, pretrained teacher: the part of KD that KD and OKDDip+KD share.

The teacher is named by the `kd` options: `teacher` (an `okddip train` workdir, whose deployed
student is the teacher, or a `.keras` file of a group or of any model mapping raw images to
logits), `teacher_checkpoint` (which checkpoint of a workdir: "last", its last epoch, or "best",
the epoch with the best test-split accuracy, `checkpoints/best.keras`; the authors' KD loads its
teacher's best.pth, train_kd.py:305-314, written at the best test epoch, train.py:223-232) and
`alpha`, the weight of its KL term. Locating or training it before the group is built
is the pipeline's work (okddip_tf.teachers), not the method's.

The teacher is saved inside the student's checkpoints (its architecture in the group's config,
its weights frozen), so a run resumes and exports without the teacher's files.
"""

import os

import keras
from keras import ops

from okddip_tf import losses
from okddip_tf.errors import ConfigError, MissingInputError

# Where `okddip train` keeps a run's checkpoints inside its workdir, by `kd.teacher_checkpoint`.
WORKDIR_CHECKPOINTS = {"last": os.path.join("checkpoints", "last.keras"),
                       "best": os.path.join("checkpoints", "best.keras")}


class WithTeacher:
    """Mixin for a method that distils from a frozen teacher (options in `config.kd`).

    Put it before the method it extends: `class KD(WithTeacher, base.Method)`.
    """

    def __init__(self, teacher_model=None, **options):
        super().__init__(**options)
        self.teacher_model = teacher_model  # the teacher's architecture once built (saving)

    def check_options(self):
        super().check_options()
        if not self.options["alpha"] >= 0:
            raise ConfigError(f"kd.alpha must be >= 0, got {self.options['alpha']}.")
        if self.options["teacher_checkpoint"] not in WORKDIR_CHECKPOINTS:
            raise ConfigError(f"kd.teacher_checkpoint must be one of {sorted(WORKDIR_CHECKPOINTS)}"
                              f", got {self.options['teacher_checkpoint']!r}.")

    def get_config(self):
        return {**super().get_config(), "teacher_model": self.teacher_model}

    def build_layers(self, context):
        layers = super().build_layers(context)
        self.teacher, self.teacher_model = build_teacher(
            self.options["teacher"], self.teacher_model, context.num_classes,
            self.options["teacher_checkpoint"])
        return {**layers, "teacher": self.teacher}

    def outputs(self, students, training):
        logits = ops.stop_gradient(ops.cast(self.teacher(students.images, training=False),
                                            "float32"))
        return {**super().outputs(students, training), "teacher_logits": logits}

    def teacher_term(self, outputs, student_logits, temperature):
        """alpha * sum over the given students of KL_T(softmax(z_t / T) || student), T^2 in."""
        target = ops.softmax(outputs["teacher_logits"] / temperature, axis=-1)
        kl = sum(losses.distillation_kl(target, logits, temperature) for logits in student_logits)
        return kl, ops.cast(self.options["alpha"], kl.dtype) * kl


def checkpoint_of(teacher, which="last"):
    """The `.keras` file a `kd.teacher` value names: a workdir's last or best checkpoint
    (`which`, `kd.teacher_checkpoint`), or the file itself."""
    if os.path.isdir(teacher):
        path = os.path.join(teacher, WORKDIR_CHECKPOINTS[which])
        if not os.path.isfile(path) and which == "best" and os.path.isfile(
                os.path.join(teacher, WORKDIR_CHECKPOINTS["last"])):
            raise MissingInputError(
                f"kd.teacher={teacher!r} holds no {WORKDIR_CHECKPOINTS['best']}: the run was "
                "trained before okddip_tf kept its best epoch. Use "
                "--config.kd.teacher_checkpoint=last (its last epoch), or train the teacher again.")
        if not os.path.isfile(path):
            raise MissingInputError(
                f"kd.teacher={teacher!r} is a folder without {WORKDIR_CHECKPOINTS[which]}: name a "
                "finished `okddip train` workdir or a .keras file.")
        return path
    if not os.path.isfile(teacher):
        raise MissingInputError(
            f"kd.teacher={teacher!r} does not exist: name a finished `okddip train` workdir or a "
            ".keras file, or leave it empty to train kd.teacher_config first.")
    return teacher


def load_teacher(teacher, which="last"):
    """The teacher network from a `kd.teacher` value (and `kd.teacher_checkpoint`): a saved
    group's deployed student (its `leader`), or the saved model itself."""
    model = keras.saving.load_model(checkpoint_of(teacher, which), compile=False)
    return getattr(model, "leader", model)


def build_teacher(teacher, teacher_model, num_classes, which="last"):
    """(frozen teacher model, its serialised architecture) from a saved architecture or a path
    (`which` of a workdir's checkpoints: "last" or "best")."""
    if teacher_model is not None:
        model = keras.saving.deserialize_keras_object(teacher_model)
    elif teacher:
        model = load_teacher(teacher, which)
    else:
        raise ConfigError("KD needs a teacher: set --config.kd.teacher=WORKDIR_OR_FILE (or "
                          "kd.teacher_config, a config `okddip train` trains first).")
    classes = model.outputs[0].shape[-1] if getattr(model, "outputs", None) else None
    if classes != num_classes:
        raise ConfigError(f"The teacher ({teacher or 'saved'}) predicts {classes} classes; this "
                          f"group has {num_classes}. Train the teacher on the same dataset.")
    model.trainable = False
    return model, keras.saving.serialize_keras_object(model)
