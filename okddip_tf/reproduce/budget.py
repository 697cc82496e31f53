"""The budget of a reproduction: the paper's 300-epoch CIFAR schedule scaled to E epochs.

The learning rate drops x0.1 at the same fractions of training (the paper: epochs 150 and 225 of
300) and the distillation weight ramps up over the same fraction (80 of 300); E = 300 is the
paper's recipe exactly. ImageNet cells (Table 3) scale the paper's ImageNet schedule instead
(drops at 30 and 60 of 90, the ramp-up over 24 of 90): E = 90 is that recipe exactly. Pure
functions: `okddip reproduce` turns them into --config overrides.
"""

import dataclasses
import math
import os
from typing import Optional

from okddip_tf.errors import ConfigError

PAPER_EPOCHS = 300
PAPER_DROPS = (150, 225)
PAPER_RAMPUP = 80
PAPER_SEEDS = 3
# The paper's schedules: (epochs, learning-rate drop epochs, ramp-up epochs).
SCHEDULES = {"cifar": (PAPER_EPOCHS, PAPER_DROPS, PAPER_RAMPUP),
             "imagenet": (90, (30, 60), 24)}
# A smoke run checks the harness on 256 tiny images: 2 epochs exercise the epoch loop, the resume
# and the report; the paper's 300 would take a new user's row over half an hour.
SMOKE_EPOCHS = 2


def counted(number, noun):
    """'1 seed', '3 seeds'."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def scale_epoch(epoch, epochs, paper_epochs=PAPER_EPOCHS):
    """The paper's epoch `epoch` of `paper_epochs` at a budget of `epochs`, rounded half up."""
    return math.floor(epoch * epochs / paper_epochs + 0.5)


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much of the paper's recipe a reproduction runs.

    Attributes:
      epochs: E, the training epochs of every cell; None: 2 for a smoke run (enough to check
        the harness), else the paper's 300.
      seeds: runs per cell, with train.seed = 0 .. seeds - 1 (the paper: 3).
      train_examples: the first N training images only (None: the whole split, as the paper).
      smoke: tiny backbone and data (configs/paper.py's `smoke`), for tests of the harness.
      train_seeds: the seeds this invocation trains (None: all of 0 .. seeds - 1), e.g. (1, 2)
        to add seeds to a row whose seed 0 was trained before; the report still reads them all.
      npz: an .npz the cells read their data from (data.source=npz, data.path) instead of
        tensorflow-datasets: how a machine with JAX and no TensorFlow reproduces (okddip_tf/data/
        npz.py reads it). It holds one dataset, so the cells must all train on that one. An
        absolute path: the cells' trainings keep it in their configs.
    """

    epochs: Optional[int] = None
    seeds: int = PAPER_SEEDS
    train_examples: Optional[int] = None
    smoke: bool = False
    train_seeds: Optional[tuple] = None
    npz: Optional[str] = None

    def __post_init__(self):
        if self.epochs is None:  # frozen: set the default the one way a frozen dataclass allows
            object.__setattr__(self, "epochs", SMOKE_EPOCHS if self.smoke else PAPER_EPOCHS)
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {self.epochs} (the paper trains 300).")
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {self.seeds} (the paper runs 3).")
        if self.train_examples is not None and self.train_examples < 1:
            raise ConfigError(f"--train_examples must be >= 1, got {self.train_examples}; leave "
                              "it out for the whole training split.")
        outside = sorted(set(self.train_seeds or ()) - set(range(self.seeds)))
        if outside:
            raise ConfigError(f"--train_seeds={','.join(map(str, self.train_seeds))} names "
                              f"seed(s) {outside} outside 0 .. {self.seeds - 1}: raise --seeds to "
                              "include them (--seeds counts seeds from 0).")

    @property
    def trained_seeds(self):
        """The seeds this invocation trains, in order."""
        return tuple(self.train_seeds) if self.train_seeds else tuple(range(self.seeds))

    @property
    def drop_epochs(self):
        return tuple(scale_epoch(epoch, self.epochs) for epoch in PAPER_DROPS)

    @property
    def rampup_length(self):
        return scale_epoch(PAPER_RAMPUP, self.epochs)

    def scaled(self, schedule="cifar"):
        """(learning-rate drop epochs, ramp-up epochs) of the paper's `schedule` ("cifar" or
        "imagenet", SCHEDULES) scaled to the budget's epochs."""
        paper_epochs, drops, rampup = SCHEDULES[schedule]
        return (tuple(scale_epoch(e, self.epochs, paper_epochs) for e in drops),
                scale_epoch(rampup, self.epochs, paper_epochs))

    def overrides(self, seed, schedule="cifar"):
        """The config keys the budget sets for one seed, {key: value}, with `schedule`'s
        learning-rate drops and ramp-up (`scaled`)."""
        drops, rampup = self.scaled(schedule)
        result = {"train.epochs": self.epochs, "optim.drop_epochs": drops,
                  "rampup.length": rampup, "train.seed": seed}
        if self.train_examples is not None:
            result["data.train_examples"] = self.train_examples
        if self.npz is not None:
            result.update({"data.source": "npz", "data.path": self.npz})
        return result

    def describe(self, schedule="cifar"):
        """One line: the budget against the paper's recipe (`schedule`: "cifar" or "imagenet")."""
        paper_epochs, paper_drops, paper_rampup = SCHEDULES[schedule]
        (first, second), rampup = self.scaled(schedule)
        data = (f"the first {self.train_examples:,} training images" if self.train_examples
                else "256 training images (smoke)" if self.smoke else "the whole training split")
        seeds = counted(self.seeds, "seed") + (
            " (the paper: 3)" if self.seeds != PAPER_SEEDS else "")
        text = (f"{self.epochs} epochs (the paper: {paper_epochs}); learning rate x0.1 from "
                f"epochs {first} and {second} (0-indexed; the paper: {paper_drops[0]} and "
                f"{paper_drops[1]}); distillation ramp-up over {rampup} epochs (the "
                f"paper: {paper_rampup}); {data}; {seeds}")
        if self.npz is not None:
            text += f"; data read from {os.path.basename(self.npz)} (data.source=npz)"
        return text + ("; smoke: the tiny backbone, a check of the harness and not a measurement"
                       if self.smoke else "")

    def headline(self):
        """A few words for a title: "15 of 300 epochs, 1 seed"."""
        return (f"{self.epochs} of {PAPER_EPOCHS} epochs, {counted(self.seeds, 'seed')}"
                + (", smoke" if self.smoke else ""))
