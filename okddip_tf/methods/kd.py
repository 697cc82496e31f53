"""Classic knowledge distillation (Hinton et al. 2015) from a frozen, pretrained teacher.

As the authors' `train_kd.py` runs it: one student, loss CE(z_s) + alpha * KL_T(z_t || z_s) with
alpha = 1 and T = 3 (T^2 included), the teacher in inference mode and out of the gradient. The
paper's teacher (Table 6) is the bottleneck ResNet-110 baseline; the KD configs name a config that
trains it (`kd.teacher_config`), which `okddip train` runs first into `<workdir>/teacher/` unless
`kd.teacher` names a finished run or a `.keras` file (okddip_tf.teachers). The teacher itself is
methods/teacher.py, shared with OKDDip+KD.
"""

from okddip_tf import losses
from okddip_tf.methods import base
from okddip_tf.methods.teacher import WithTeacher


class KD(WithTeacher, base.Method):
    """One student distilling from a frozen teacher (the paper's "KD", Table 6).

    Options (`config.kd.*`): `teacher` (an `okddip train` workdir, whose deployed student is the
    teacher, or a `.keras` file of a group or of any model mapping raw images to logits),
    `teacher_config` (used when `teacher` is empty) and `alpha`.
    """

    name = "kd"
    terms = ("leader_ce", "teacher_kd")
    deployed = "the student"

    def loss(self, labels, outputs, *, temperature, distill_weight):
        leader_ce = losses.cross_entropy(labels, outputs["leader_logits"])
        teacher_kd, weighted = self.teacher_term(outputs, [outputs["leader_logits"]], temperature)
        return {"loss": leader_ce + weighted, "leader_ce": leader_ce, "teacher_kd": teacher_kd}
