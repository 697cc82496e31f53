"""`python -m okddip_tf.cli ...`: the `okddip` command."""

import sys

from okddip_tf.cli import run

sys.exit(run())
