"""Progress lines for steps that would otherwise run silently for seconds or minutes.

They go to stdout, like Keras' progress bars; errors go to stderr.
"""

import contextlib
import time


def say(message):
    print(message, flush=True)


@contextlib.contextmanager
def step(message):
    """Prints `message ...` before the step and how long it took after it."""
    say(f"{message} ...")
    start = time.perf_counter()
    yield
    say(f"  done in {time.perf_counter() - start:.1f} s")
