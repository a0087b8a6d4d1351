"""segbench's progress on stderr: an estimate once the warm-up has been timed, then a bar on a
terminal or plain lines elsewhere (CI logs, ``make`` output, ``2> file``), and what was done when
the run is interrupted. Python 3.6 compatible.
"""

import sys
import time

# A plain progress line at most this often (seconds), at the tenths of a run.
LINE_INTERVAL_S = 10.0
# Runs estimated to take at least this long (seconds) are announced up front.
ESTIMATE_FROM_S = 10.0
# Runs estimated to take longer than this get the fast form offered.
LONG_RUN_S = 30.0
QUICK_ITERS = 20


def duration(seconds):
    """'0.4 s', '42 s', '3 min 20 s', '1 h 05 min'."""
    seconds = float(seconds)
    if seconds < 10:
        return "{:.1f} s".format(seconds)
    if seconds < 60:
        return "{:.0f} s".format(seconds)
    if seconds < 3600:
        return "{:d} min {:02d} s".format(int(seconds // 60), int(seconds % 60))
    return "{:d} h {:02d} min".format(int(seconds // 3600), int(seconds % 3600 // 60))


class Progress(object):
    """Called with the iterations done so far (``progress(done)``); ``start(label)`` begins a run,
    ``estimate(seconds_per_iteration, iterations)`` comes from the harness after the warm-up.

    ``bar``: a tqdm bar on a terminal, plain lines elsewhere; ``notes``: the estimate (off with
    -q). ``runs`` is how many runs the command will time, for the estimate's total."""

    def __init__(self, runs=1, bar=True, notes=True, stream=None, clock=None):
        self.stream = stream or sys.stderr
        self.clock = clock or time.monotonic
        self.runs = max(1, int(runs))
        self.notes = notes
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar = None
        self._want_bar = bar
        self._plain = bar and not self.tty
        self.label = None
        self.started_runs = 0
        self.finished_runs = 0
        self.done = 0
        self.iters = None
        self._started = None
        self._last_line = None
        self._next_tenth = 1

    def enable(self, bar=True, notes=True):
        """Turn the bar/lines and the estimate on or off (once the options are parsed)."""
        self._want_bar = bar
        self._plain = bar and not self.tty
        self.notes = notes

    def _say(self, text):
        print("segbench: " + text, file=self.stream)
        self.stream.flush()

    def start(self, label):
        if self.label is not None and self.iters and self.done >= self.iters:
            self.finished_runs += 1
        self._close_bar()
        self.label = label
        self.started_runs += 1
        self.done = 0
        self.iters = None
        self._started = self._last_line = self.clock()
        self._next_tenth = 1

    def estimate(self, seconds_per_iteration, iterations):
        """The run's expected length, said up front: iterations x the measured time of one."""
        self.iters = int(iterations)
        self._started = self._last_line = self.clock()
        if self._want_bar and self.tty:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=self.iters, unit="it", file=self.stream, leave=False)
                self._bar.set_description(self.label or "")
            except ImportError:
                self._bar = None
        seconds = seconds_per_iteration * self.iters
        if not self.notes or seconds < ESTIMATE_FROM_S:
            return  # a short run: its result comes before an estimate would matter
        left_runs = self.runs - self.started_runs
        text = "{}: {} timed iterations at ~{} ms each (timed in the warm-up): about {}".format(
            self.label or "run", self.iters, _ms(seconds_per_iteration), duration(seconds)
        )
        if left_runs > 0:
            text += " for this run, {} more run{} after it".format(
                left_runs, "" if left_runs == 1 else "s"
            )
        if seconds > LONG_RUN_S and self.iters > QUICK_ITERS:
            text += "; for a quick figure pass --iters {} (fewer samples, wider spread)".format(
                QUICK_ITERS
            )
        self._say(text)

    def __call__(self, done):
        step = done - self.done
        self.done = done
        if self._bar is not None:
            self._bar.update(step)
            return
        if not self._plain or not self.iters:
            return
        if done * 10 < self._next_tenth * self.iters:
            return
        while self._next_tenth * self.iters <= done * 10:
            self._next_tenth += 1
        now = self.clock()
        if done < self.iters and now - self._last_line < LINE_INTERVAL_S:
            return
        if done >= self.iters and now - self._started < LINE_INTERVAL_S:
            return  # a short run: its result says it all
        self._last_line = now
        elapsed = now - self._started
        text = "{}: {}/{} iterations, {} elapsed".format(
            self.label or "run", done, self.iters, duration(elapsed)
        )
        if done < self.iters:
            text += ", about {} left".format(duration(elapsed / done * (self.iters - done)))
        self._say(text)

    def summary(self):
        """What was done, for the line an interruption prints."""
        finished = self.finished_runs + (1 if self.iters and self.done >= self.iters else 0)
        text = "{} of {} run{} finished".format(finished, self.runs, "" if self.runs == 1 else "s")
        if self.label is not None and self.iters and self.done < self.iters:
            text += " ({} stopped at {}/{} iterations)".format(self.label, self.done, self.iters)
        return text + "; no results were written"

    def _close_bar(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def close(self):
        self._close_bar()


def _ms(seconds):
    ms = seconds * 1e3
    return "{:.0f}".format(ms) if ms >= 10 else "{:.2f}".format(ms)
