"""OKDDip+KD (Table 6): OKDDip with a pretrained teacher's KL term added for every student.

The paper adds "the KL-divergence losses between the predictions of each student and the
teacher" to OKDDip's loss; the authors' repository has no implementation. Ours: OKDDip's loss plus
alpha * sum over all m students of KL_T(z_t || z_s), with KD's teacher (methods/teacher.py),
alpha = 1 and T = 3. The teacher term is not ramped up, as in classic KD (the paper says nothing
of a ramp for it).
"""

from okddip_tf.methods import base
from okddip_tf.methods.okddip import OKDDip
from okddip_tf.methods.teacher import WithTeacher


class OKDDipKD(WithTeacher, OKDDip):
    """OKDDip (options in `config.okddip`) plus a frozen teacher (options in `config.kd`)."""

    name = "okddip_kd"

    @property
    def terms(self):
        return super().terms + ("teacher_kd",)

    def loss(self, labels, outputs, *, temperature, distill_weight):
        terms = super().loss(labels, outputs, temperature=temperature,
                             distill_weight=distill_weight)
        students = base.student_logits(outputs, self.two_level)
        teacher_kd, weighted = self.teacher_term(
            outputs, [students[:, i] for i in range(students.shape[1])], temperature)
        return {**terms, "loss": terms["loss"] + weighted, "teacher_kd": teacher_kd}
