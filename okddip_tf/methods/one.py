"""ONE (Lan, Zhu & Gong, NeurIPS 2018): on-the-fly native ensemble, as the OKDDip authors' code
runs it (`train_one.py`).

A branch group of m students, all of them students (no separate leader role). A gate on the
shared trunk's output (global average pool -> Dense(m) with bias -> BatchNorm -> ReLU -> softmax)
weights the branches; the teacher is the gated sum of the branch logits, z_e = sum_i g_i z_i:

    loss = sum_i CE(z_i) + CE(z_e) + w(e) * sum_i KL_T(z_e || z_i)

with the OKDDip ramp-up w(e). In the authors' code the teacher is not detached, so the KL terms
also train the gate and every branch through z_e; the official ONE detaches it
(`one.detach_teacher=True`) and uses 3 branches, no Nesterov and weight decay 1e-4.
"""

import keras
from keras import layers, ops

from okddip_tf import losses
from okddip_tf.initializers import linear_initializers
from okddip_tf.methods import base
from okddip_tf.batchnorm import BatchNormalization


def build_gate(channels, num_students, name="gate", init_std=None):
    """Feature map [B, h, w, channels] -> branch weights [B, m] (rows sum to 1), float32.

    `init_std`: the dense layer's weights from N(0, init_std) and zero bias (the authors' VGG-16
    ONE, `vgg_one.py:71,83-85`: 0.01); None: PyTorch's default (their ResNet ONE).
    The BatchNorm is the authors' `nn.BatchNorm1d`: momentum 0.1 (Keras' 0.9), epsilon 1e-5, and
    a running variance updated with the unbiased batch variance, as PyTorch does.
    """
    kernel, bias = linear_initializers(channels, init_std)
    feature_map = keras.Input(shape=(None, None, channels), name="shared_features")
    x = layers.GlobalAveragePooling2D(name="pool", dtype="float32")(feature_map)
    x = layers.Dense(num_students, kernel_initializer=kernel, bias_initializer=bias,
                     name="dense", dtype="float32")(x)
    x = BatchNormalization(momentum=0.9, epsilon=1e-5, unbiased_moving_variance=True, name="bn",
                           dtype="float32")(x)
    x = layers.ReLU(name="relu", dtype="float32")(x)
    weights = layers.Softmax(name="softmax", dtype="float32")(x)
    return keras.Model(feature_map, weights, name=name)


def one_loss(labels, outputs, *, temperature=3.0, distill_weight=1.0, detach_teacher=False):
    """ONE's loss: `loss`, `student_ce`, `teacher_ce` and `student_kd` (T^2 included)."""
    students = base.student_logits(outputs)
    teacher = outputs["teacher_logits"]
    student_ce = base.sum_student_cross_entropy(labels, outputs)
    teacher_ce = losses.cross_entropy(labels, teacher)
    target = ops.softmax(teacher / temperature, axis=-1)
    if detach_teacher:
        target = ops.stop_gradient(target)
    student_kd = sum(losses.distillation_kl(target, students[:, i], temperature)
                     for i in range(students.shape[1]))
    weight = ops.cast(distill_weight, student_ce.dtype)
    return {"loss": student_ce + teacher_ce + weight * student_kd, "student_ce": student_ce,
            "teacher_ce": teacher_ce, "student_kd": student_kd}


class ONE(base.StudentsAlike):
    """ONE: a gated ensemble of the branches teaches every branch.

    Options (`config.one.*`): `detach_teacher` (False, the OKDDip authors' code; True, the
    official ONE). Outputs `gate` [B, m] and `teacher_logits` [B, C].
    """

    name = "one"
    terms = ("student_ce", "teacher_ce", "student_kd")

    def build_layers(self, context):
        self.gate = build_gate(context.backbone.trunk_channels, context.num_students,
                               init_std=context.backbone.linear_init_std)
        return {"gate": self.gate}

    def outputs(self, students, training):
        gate = self.gate(ops.cast(students.shared, "float32"), training=training)  # [B, m]
        logits = ops.stack(students.logits, axis=1)  # [B, m, C]
        return {"gate": gate, "teacher_logits": ops.einsum("bm,bmc->bc", gate, logits)}

    def loss(self, labels, outputs, *, temperature, distill_weight):
        return one_loss(labels, outputs, temperature=temperature, distill_weight=distill_weight,
                        detach_teacher=self.options["detach_teacher"])
