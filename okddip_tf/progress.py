"""Progress lines: for steps that would otherwise run silently, and for training (ProgressLine).

They go to stdout, like Keras' progress bars; errors go to stderr.
"""

import contextlib
import shutil
import sys
import time

import keras


def say(message):
    print(message, flush=True)


@contextlib.contextmanager
def step(message):
    """Prints `message ...` before the step and how long it took after it."""
    say(f"{message} ...")
    start = time.perf_counter()
    yield
    say(f"  done in {time.perf_counter() - start:.1f} s")


# Training progress: a short line instead of Keras' bar of every logged value.

WIDTH = 100  # the longest line written, and the most a terminal line gets


def is_terminal(stream):
    """Whether `stream` redraws a line on "\\r" (a terminal or a notebook), not a file or pipe."""
    if getattr(stream, "isatty", lambda: False)():
        return True
    return "ipykernel" in sys.modules and stream in (sys.stdout, sys.stderr)


def format_value(value):
    value = float(value)
    return f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e5 else f"{value:.3e}"


def format_seconds(seconds):
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    if seconds >= 60:
        return f"{seconds // 60}:{seconds % 60:02d}"
    return f"{seconds}s"


def wrap_fields(fields, width=WIDTH, separator=" - ", indent="    "):
    """`fields` joined by `separator` into lines of at most `width` characters (a field longer
    than that stays whole on a line of its own)."""
    lines, line = [], ""
    for field in fields:
        joined = f"{line}{separator}{field}" if line else field
        if line and len(joined) > width:
            lines.append(line)
            joined = indent + field
        line = joined
    return lines + [line]


class ProgressLine(keras.callbacks.ProgbarLogger):
    """Training progress that fits a terminal line: the loss, the chosen accuracy, the time left.

    Keras' progress bar prints every logged value (a group logs 18 or more, 700 characters a
    step); this shows `loss` and `metrics` only. Every value still reaches the other callbacks
    (history, TensorBoard). With fit's `verbose`:

    * 1: on a terminal one line redrawn as the steps go (step, bar, time left; cut to the
      terminal's width), then the epoch's line. Into a file or pipe, the epoch's line, and within
      an epoch at most one progress line every `interval` seconds, not one a step.
    * 2: the epoch's line only. 0: nothing.

    The epoch's line, numbered as Keras numbers epochs (1-based), with the validation values:
    `Epoch 3/300 - 45s - loss: 2.1034 (val 2.3125) - leader_accuracy: 0.4512 (val 0.4205)`.

    Use it in `fit` (it takes the place of Keras' progress bar there); evaluate and predict print
    nothing with it.

    Args:
      metrics: the logged values shown beside the loss; None: the model's method's reported one
        (`GroupModel.method.reported`), else the first logged "...accuracy".
      interval: seconds between a piped run's progress lines within an epoch.
      stream: where to write; None: sys.stdout when written.
    """

    def __init__(self, metrics=None, interval=60.0, stream=None):
        super().__init__()
        self.metrics, self.interval, self.stream = metrics, interval, stream
        self.shown, self.epoch, self.in_fit, self.logs = None, 0, False, {}
        self.epoch_start = self.first_step_end = self.last_line = 0.0
        self.drawn = 0  # the characters of the live line now on the terminal

    def set_params(self, params):
        super().set_params(params)
        self.verbose = 1 if params.get("verbose") == "auto" else params.get("verbose", 1)

    def output(self):
        return self.stream or sys.stdout

    def write(self, text):
        stream = self.output()
        stream.write(text)
        stream.flush()

    def width(self):
        if not is_terminal(self.output()):
            return WIDTH
        return max(20, min(WIDTH, shutil.get_terminal_size((WIDTH + 1, 24)).columns - 1))

    def shown_metrics(self, logs):
        if self.shown is None:
            if self.metrics is not None:
                self.shown = list(self.metrics)
            else:
                reported = getattr(getattr(self.model, "method", None), "reported", None)
                found = [key for key in logs if key.endswith("accuracy")
                         and not key.startswith("val_")]
                self.shown = [reported] if reported else found[:1]
        return [key for key in ["loss", *self.shown] if key in logs]

    def on_train_begin(self, logs=None):
        self.in_fit = True

    def on_train_end(self, logs=None):
        self.in_fit = False

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.epoch_start = self.last_line = time.monotonic()
        self.first_step_end = None

    def on_train_batch_end(self, batch, logs=None):
        if self.verbose != 1 or not logs:
            return
        now, done, self.logs = time.monotonic(), batch + 1, logs
        if self.first_step_end is None:
            self.first_step_end = now  # the first step compiles: the time left counts from here
        terminal = is_terminal(self.output())
        if now - self.last_line < (0.1 if terminal else self.interval):
            return
        self.last_line = now
        left = ""
        if self.target and done > 1:
            left = format_seconds((now - self.first_step_end) / (done - 1)
                                  * (self.target - done)) + " left"
        line = self.step_line(done, left, logs)
        if terminal:
            self.redraw(line)
        else:
            self.write(line + "\n")

    def on_test_begin(self, logs=None):
        if self.in_fit and self.verbose == 1 and self.drawn:
            self.redraw(self.step_line(self.target or 0, "validating", self.logs))

    def on_test_batch_end(self, batch, logs=None):
        pass

    def on_test_end(self, logs=None):
        pass

    def on_predict_begin(self, logs=None):
        pass

    def on_predict_batch_end(self, batch, logs=None):
        pass

    def on_predict_end(self, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        if not self.verbose:
            return
        logs = logs or {}
        fields = [self.epoch_name(), format_seconds(time.monotonic() - self.epoch_start)]
        for key in self.shown_metrics(logs):
            field = f"{key}: {format_value(logs[key])}"
            if f"val_{key}" in logs:
                field += f" (val {format_value(logs[f'val_{key}'])})"
            fields.append(field)
        lines = wrap_fields(fields, self.width())
        if self.drawn:
            self.redraw(lines[0])
            lines[0] = ""
        self.write("\n".join(lines) + "\n")
        self.drawn = 0

    def epoch_name(self):
        return f"Epoch {self.epoch + 1}/{self.epochs}"

    def step_line(self, done, status, logs):
        steps = f"{done}/{self.target}" if self.target else f"{done}"
        if is_terminal(self.output()) and self.target:
            filled = int(12 * done / self.target)
            steps += " [" + "=" * filled + " " * (12 - filled) + "]"
        fields = [f"{self.epoch_name()} {steps}"] + ([status] if status else [])
        fields += [f"{key}: {format_value(logs[key])}" for key in self.shown_metrics(logs)]
        return " - ".join(fields)

    def redraw(self, line):
        """Replaces the terminal's live line by `line`, cut to the terminal's width."""
        width = self.width()
        if len(line) > width:
            line = line[:width - 3] + "..."
        self.write("\r" + line + " " * max(0, self.drawn - len(line)))
        self.drawn = len(line)


def with_progress_line(callbacks, **kwargs):
    """`callbacks` (a list or None) with a ProgressLine, unless they hold a progress bar already."""
    if isinstance(callbacks, keras.callbacks.CallbackList):
        return callbacks
    callbacks = list(callbacks or [])
    if not any(isinstance(c, keras.callbacks.ProgbarLogger) for c in callbacks):
        callbacks.append(ProgressLine(**kwargs))
    return callbacks
