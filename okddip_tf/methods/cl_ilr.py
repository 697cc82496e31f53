"""CL-ILR (Song & Chai, NeurIPS 2018): collaborative learning with intermediate-level
representation sharing, as the OKDDip authors' code runs it (`train_one.py --avg --bpscale`).

A branch group of m students: branch i distils from the mean of the other branches' logits,

    loss = sum_i CE(z_i) + w(e) * sum_i KL_T(softmax(mean_{j != i} z_j / T) || z_i),

targets not detached, with the OKDDip ramp-up w(e). Backpropagation rescaling: the shared trunk's
output passes through an op that is the identity forward and multiplies the gradient by 1/m
backward, so the trunk gets the mean, not the sum, of the branches' gradients.

The CL-ILR paper itself uses a hierarchy of splits and T = 2 with detached targets (MCL-OKD's
reimplementation); we follow the OKDDip authors' code, whose numbers the paper's tables report:
one split after the second stage, factor 1/m, T = model.temperature (3).
"""

from keras import ops

from okddip_tf import losses
from okddip_tf.methods import base


def rescale_gradient(x, factor):
    """Identity forward (bit-exact), gradient times `factor` backward."""
    frozen = ops.stop_gradient(x)
    return frozen + factor * (x - frozen)


def cl_ilr_loss(labels, outputs, *, temperature=3.0, distill_weight=1.0):
    """CL-ILR's loss over every student; returns `loss`, `student_ce`, `student_kd`."""
    students = base.student_logits(outputs)
    student_ce = base.sum_student_cross_entropy(labels, outputs)
    student_kd = losses.leave_one_out_kd(students, temperature)
    weight = ops.cast(distill_weight, student_ce.dtype)
    return {"loss": student_ce + weight * student_kd, "student_ce": student_ce,
            "student_kd": student_kd}


class CLILR(base.StudentsAlike):
    """CL-ILR: branches distil from the others' mean; the shared trunk's gradient is x 1/m.

    Options (`config.cl_ilr.*`): `rescale_gradient` (True; False drops the backprop rescaling).
    """

    name = "cl_ilr"
    terms = ("student_ce", "student_kd")

    def build_layers(self, context):
        self.num_students = context.num_students
        return {}

    def shared_features(self, shared):
        if not self.options["rescale_gradient"]:
            return shared
        return rescale_gradient(shared, 1.0 / self.num_students)

    def loss(self, labels, outputs, *, temperature, distill_weight):
        return cl_ilr_loss(labels, outputs, temperature=temperature, distill_weight=distill_weight)
