"""What a training method declares, and the pieces every method shares.

A method is one class in one module of this package. `GroupModel` builds the students (trunks and
heads) and asks its method for the rest:

* `build_layers`: the layers the method adds to the group (OKDDip's peer attention, ONE's gate,
  a frozen teacher), set on the group under the names returned, so checkpoints hold them;
* `shared_features`: what the branches read from a shared trunk (CL-ILR rescales its gradient);
* `outputs`: what it adds to `group(images)` beside `peer_logits` and `leader_logits`;
* `loss`: a pure `keras.ops` function of (labels, outputs) returning a dict of terms with `loss`.

Its class attributes say the rest: the config sections it reads (`sections`: options with their
defaults, one `config.<section>` each), the knobs `okddip tune` may search (`tuner_knobs`), the
group sizes and sharings it allows, whether it distils (and so takes the ramped weight), and which
logged accuracy is "the method's number" in the paper's protocol (`reported`).

Students: a group of m students has `num_peers(m)` auxiliary peers (outputs `peer_logits`) and,
for most methods, a separate last student, the "leader" (`leader_logits`). `deployed_index(m)` is
the student `okddip export` deploys and `leader_logits` shows; for methods without a leader it
is one of the peers.
"""

import dataclasses
from typing import Optional, Sequence

from keras import ops

from okddip_tf import losses
from okddip_tf.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class GroupContext:
    """What a method may read when it builds its layers.

    Attributes:
      backbone: the `okddip_tf.models.Backbone` of the students.
      num_classes, num_students, num_peers: the group's sizes.
      sharing: "branch" or "network".
      sync_batchnorm: whether BatchNorm layers are synchronised across replicas.
      image_shape: (H, W, 3) the group is built for, or None.
    """

    backbone: object
    num_classes: int
    num_students: int
    num_peers: int
    sharing: str
    sync_batchnorm: bool
    image_shape: Optional[tuple]


@dataclasses.dataclass(frozen=True)
class Students:
    """One forward pass of the students, handed to `Method.outputs`.

    Attributes:
      images: the raw input images [B, H, W, 3].
      shared: the shared trunk's output feature map (branch groups), else None.
      features: per student, the pooled features [B, D] that feed its classifier.
      logits: per student, its logits [B, C]. Peers first, then the leader (if any).
    """

    images: object
    shared: object
    features: Sequence
    logits: Sequence


@dataclasses.dataclass(frozen=True)
class TunerKnob:
    """A hyperparameter `okddip tune` may search: `config.tuner.<name>` holds its values.

    kind: "range" or "log" (a (low, high) float range) or "choice" (a tuple of integers).
    """

    name: str
    key: str  # "<section>.<key>" of the config
    kind: str
    default: tuple


class Method:
    """Base class: a method with no layers and no extra outputs (override what differs)."""

    name = ""
    # {section: {option: default}}: each section becomes `config.<section>`; several methods may
    # read one section (OKDDip+KD reads `okddip` and `kd`), with the same defaults.
    sections = {}  # (a None default is an optional integer in the config)
    terms = ()  # the loss terms besides `loss`, in logging order
    distills = False  # takes the ramp-up weight w(e) (`distill_weight`)
    min_students, max_students = 2, 8
    sharings = ("branch", "network")
    tuner_knobs = ()
    reported = "leader_accuracy"  # the logged accuracy the paper's tables report for it
    ensemble = None  # the logged accuracy of its ensemble, if it has one
    deployed = "the leader"  # which student `okddip export` deploys, in words

    def __init__(self, **options):
        known = {key: default for section in self.sections.values()
                 for key, default in section.items()}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ConfigError(
                f"Method {self.name!r} has no option(s) {unknown}. Its options: "
                f"{sorted(known) or 'none'}.")
        self.options = {**known, **options}
        self.check_options()

    def check_options(self):
        """Raises ValueError for a bad option value (override)."""

    @property
    def uses_temperature(self):
        """Whether `model.temperature` matters (distilling methods; KD and DML say so too)."""
        return self.distills

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
        if not self.min_students <= num_students <= self.max_students:
            raise ConfigError(
                f"Method {self.name!r} needs num_students between {self.min_students} and "
                f"{self.max_students}, got {num_students}. Set --config.model.num_students "
                "(OKDDip's default is 4: 3 peers and a leader; 'baseline' and 'kd' use 1).")
        if num_students > 1 and sharing not in self.sharings:
            raise ConfigError(
                f"Method {self.name!r} needs sharing in {self.sharings}, got {sharing!r}. Set "
                f"--config.model.sharing={self.sharings[0]}.")

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

    def prepare(self, config, workdir):
        """Option values that need the run (e.g. a teacher to train first); {} here."""
        return {}


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
