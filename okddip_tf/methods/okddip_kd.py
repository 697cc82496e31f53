"""OKDDip+KD (Table 6): OKDDip with a pretrained teacher's KL term added for every student.

The paper adds "the KL-divergence losses between the predictions of each student and the
teacher" to OKDDip's loss; the authors' repository has no implementation. Ours: OKDDip's loss plus
alpha * sum over all m students of KL_T(z_t || z_s), with KD's teacher, alpha = 1 and T = 3. The
teacher term is not ramped up, as in classic KD (the paper says nothing of a ramp for it).
"""

from keras import ops

from okddip_tf.methods import base, kd
from okddip_tf.methods.okddip import OKDDip


class OKDDipKD(OKDDip):
    """OKDDip (options in `config.okddip`) plus a frozen teacher (options in `config.kd`)."""

    name = "okddip_kd"
    sections = {**OKDDip.sections, **kd.SECTION}
    uses_temperature = True
    tuner_knobs = OKDDip.tuner_knobs + kd.KD.tuner_knobs

    def __init__(self, teacher_model=None, **options):
        super().__init__(**options)
        self.teacher_model = teacher_model

    def check_options(self):
        super().check_options()
        kd.check_kd_options(self.options)

    def get_config(self):
        return {**super().get_config(), "teacher_model": self.teacher_model}

    @property
    def terms(self):
        return super().terms + ("teacher_kd",)

    def build_layers(self, context):
        layers = super().build_layers(context)
        self.teacher, self.teacher_model = kd.build_teacher(
            self.options["teacher"], self.teacher_model, context.num_classes)
        return {**layers, "teacher": self.teacher}

    def outputs(self, students, training):
        return {**super().outputs(students, training),
                "teacher_logits": kd.teacher_logits(self.teacher, students.images)}

    def loss(self, labels, outputs, *, temperature, distill_weight):
        terms = super().loss(labels, outputs, temperature=temperature,
                             distill_weight=distill_weight)
        students = base.student_logits(outputs, self.two_level)
        teacher_kd = kd.distill_from_teacher(
            outputs, [students[:, i] for i in range(students.shape[1])], temperature)
        alpha = ops.cast(self.options["alpha"], teacher_kd.dtype)
        return {**terms, "loss": terms["loss"] + alpha * teacher_kd, "teacher_kd": teacher_kd}

    def prepare(self, config, workdir):
        return {**super().prepare(config, workdir), **kd.prepare_teacher(self.options, config,
                                                                         workdir)}
