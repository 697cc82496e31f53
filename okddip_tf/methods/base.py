"""What a training method declares, and the pieces every method shares.

A method is one class in one module of this package. `GroupModel` builds the students (trunks and
heads) and asks its method for the rest:

* `build_layers`: the layers the method adds to the group (OKDDip's peer attention, ONE's gate,
  a frozen teacher), set on the group under the names returned, so checkpoints hold them;
* `shared_features`: what the branches read from a shared trunk (CL-ILR rescales its gradient);
* `outputs`: what it adds to `group(images)` beside `peer_logits` and `leader_logits`;
* `loss`: a pure `keras.ops` function of (labels, outputs) returning a dict of terms with `loss`.

Its declaration (`specs.py`: the config sections it reads, the knobs `okddip tune` may search,
the group sizes and sharings it allows, whether it distils and whether it needs a teacher) is
copied onto the class as attributes; the class adds which logged accuracy is "the method's
number" in the paper's protocol (`reported`).

Students: a group of m students has `num_peers(m)` auxiliary peers (outputs `peer_logits`) and,
for most methods, a separate last student, the "leader" (`leader_logits`). `deployed_index(m)` is
the student `okddip export` deploys and `leader_logits` shows; for methods without a leader it
is one of the peers.
"""

import dataclasses
from typing import Optional, Sequence

from keras import ops

from okddip_tf import losses
from okddip_tf.methods import specs
from okddip_tf.methods.specs import TunerKnob  # noqa: F401  (its old home; tests import it here)


@dataclasses.dataclass(frozen=True)
class GroupContext:
    """What a method may read when it builds its layers.

    Attributes:
      backbone: the `okddip_tf.models.Backbone` of the students.
      num_classes, num_students, num_peers: the group's sizes.
      sharing: "branch" or "network".
      sync_batchnorm: whether BatchNorm layers are synchronised across replicas.
      image_shape: (H, W, 3) the group is built for, or None (also for other inputs).
      input_spec: the `okddip_tf.inputs.InputSpec` of what the group takes.
    """

    backbone: object
    num_classes: int
    num_students: int
    num_peers: int
    sharing: str
    sync_batchnorm: bool
    image_shape: Optional[tuple]
    input_spec: object = None


@dataclasses.dataclass(frozen=True)
class Students:
    """One forward pass of the students, handed to `Method.outputs`.

    Attributes:
      images: the raw input batch (images [B, H, W, 3], or what the backbone takes).
      shared: the shared trunk's output feature map (branch groups), else None.
      features: per student, the pooled features [B, D] that feed its classifier.
      logits: per student, its logits [B, C]. Peers first, then the leader (if any).
    """

    images: object
    shared: object
    features: Sequence
    logits: Sequence


class Method:
    """Base class: a method with no layers and no extra outputs (override what differs).

    A subclass names its declaration in `specs.SPECS` (`name = "okddip"`); its fields become
    class attributes: `spec`, `sections`, `tuner_knobs`, `min_students`, `max_students`,
    `sharings`, `distills`, `uses_temperature`, `needs_teacher`.
    """

    name = ""
    terms = ()  # the loss terms besides `loss`, in logging order
    reported = "leader_accuracy"  # the logged accuracy the paper's tables report for it
    ensemble = None  # the logged accuracy of its ensemble, if it has one
    deployed = "the leader"  # which student `okddip export` deploys, in words

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            cls.spec = specs.get_spec(cls.name)
            for field in ("sections", "tuner_knobs", "min_students", "max_students", "sharings",
                          "distills", "uses_temperature", "needs_teacher"):
                setattr(cls, field, getattr(cls.spec, field))

    def __init__(self, **options):
        specs.check_options(self.spec, options)
        self.options = {**self.spec.options, **options}
        self.bound = False  # set by the group that builds this method's layers
        self.check_options()

    def check_options(self):
        """Raises ValueError for a bad option value (override)."""

    def copy(self):
        """A new, unbound method with the same options."""
        return type(self)(**self.get_config())

    def get_config(self):
        """The options, JSON-serialisable: what a saved group records of its method."""
        return dict(self.options)

    # The group's structure.

    def num_peers(self, num_students):
        """Auxiliary peers in a group of m students: m - 1 (the last student is the leader)."""
        return num_students - 1

    def has_leader(self, num_students):
        return self.num_peers(num_students) < num_students

    def deployed_index(self, num_students):
        """The student that `okddip export` deploys: the last one."""
        return num_students - 1

    def check_group(self, num_students, sharing):
        """Fails fast on a group this method cannot train, saying how to fix it."""
        specs.check_group(self.spec, num_students, sharing)

    # What the group asks of its method.

    def build_layers(self, context):
        """{attribute name: built layer} the group holds for this method."""
        return {}

    def shared_features(self, shared):
        """The shared trunk's output as the branches see it (identity)."""
        return shared

    def outputs(self, students, training):
        """Outputs besides `peer_logits` and `leader_logits` ({} here)."""
        return {}

    def loss(self, labels, outputs, *, temperature, distill_weight):
        """The dict of loss terms, with the total under `loss`."""
        raise NotImplementedError

    # What `okddip train` asks of its method before it builds the group.

    def prepare_run(self, seed, num_students):
        """Fixes the options a run draws from its seed, in place (nothing here).

        `builders.build_method` calls it once, before the group is built; a teacher is
        prepared by okddip_tf.teachers, not here.
        """


class StudentsAlike(Method):
    """A method whose m students are trained alike (Ind, DML, CL-ILR, ONE).

    The paper reports the mean accuracy over the students and their logit-averaged ensemble; the
    last student is deployed, so none is picked on test data.
    """

    reported = "student_accuracy"
    ensemble = "student_ensemble_accuracy"
    deployed = "the last student (all are trained alike; none is chosen on test data)"


def student_logits(outputs, separate_leader=True):
    """Every distinct student's logits, [B, S, C]: the peers, then the leader if separate.

    `separate_leader=False` is for groups whose `leader_logits` is one of the peers.
    """
    peers = outputs.get("peer_logits")
    leader = outputs["leader_logits"][:, None]
    if peers is None:
        return leader
    return ops.concatenate([peers, leader], axis=1) if separate_leader else peers


def sum_student_cross_entropy(labels, outputs, separate_leader=True):
    """Sum over every distinct student of its batch-mean cross-entropy."""
    logits = student_logits(outputs, separate_leader)
    return sum(losses.cross_entropy(labels, logits[:, i]) for i in range(logits.shape[1]))
