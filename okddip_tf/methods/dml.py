"""DML (Zhang et al., CVPR 2018): deep mutual learning, as the OKDDip authors' code runs it
(`train_DML.py`, `models/model_cifar/DML.py`).

m full networks trained jointly by one optimiser, one step per batch. By default (the code's
"ensemble first" branch) network j distils from the mean of the other networks' logits:

    loss = sum_j CE(z_j) + sum_j KL_T(softmax(mean_{k != j} z_k / T) || z_j),

T = 3 with T^2, targets not detached, no ramp-up. `dml.pairwise=True` is the DML paper's form,
sum_j (1/(m-1)) sum_{k != j} KL_T(z_k || z_j) (the code's `--type`). The DML paper itself uses
T = 1, detached peers and one optimiser per network; the OKDDip tables report the code's variant.
"""

from keras import ops

from okddip_tf import losses
from okddip_tf.methods import base


def dml_loss(labels, outputs, *, temperature=3.0, pairwise=False):
    """DML's loss over every network; returns `loss`, `student_ce` and `student_kd`."""
    students = base.student_logits(outputs)
    num = students.shape[1]
    student_ce = base.sum_student_cross_entropy(labels, outputs)
    if pairwise:
        student_kd = sum(
            losses.distillation_kl(ops.softmax(students[:, k] / temperature, axis=-1),
                                   students[:, j], temperature)
            for j in range(num) for k in range(num) if k != j) / (num - 1)
    else:
        student_kd = losses.leave_one_out_kd(students, temperature)
    return {"loss": student_ce + student_kd, "student_ce": student_ce, "student_kd": student_kd}


class DML(base.StudentsAlike):
    """DML: m networks, each distilling from the others (no ramp-up, no leader role).

    Options (`config.dml.*`): `pairwise` (False: the mean of the others, the code's default;
    True: the DML paper's average of pairwise KL terms). Network-based by default, as in the
    paper; `sharing="branch"` is allowed (a shared trunk, the networks' last stages apart).
    """

    name = "dml"
    terms = ("student_ce", "student_kd")

    def loss(self, labels, outputs, *, temperature, distill_weight):
        return dml_loss(labels, outputs, temperature=temperature,
                        pairwise=self.options["pairwise"])
