"""Steps, run in order, never stopping at a failure.

A step is ``Step(name, title, what, run)``: ``what`` is one line saying what it would run (printed
with the reason when it cannot), ``run(ctx)`` returns the step's data (a dict; ``data['table']``
is ``{'columns': [...], 'rows': [[...], ...]}`` when the step has a table for the report). It
ends one of three ways:

- returns: **ok**;
- raises ``Skip(reason)``, a MissingDependencyError (a library, tool or device that is not
  here) or an ImportError (a module that is not installed): **skipped**, with that one-line
  reason;
- raises anything else (``Failed`` carries data for the report): **failed**, with the error's
  first line; a step that is not a SegDeployError also keeps the last lines of its traceback.

Python 3.6 compatible.
"""

import time
import traceback
from collections import OrderedDict, namedtuple

from ..errors import MissingDependencyError, SegDeployError

Step = namedtuple("Step", ["name", "title", "what", "run"])

OK, FAILED, SKIPPED = "ok", "failed", "skipped"


class Skip(Exception):
    """The step cannot run here; the message says why, in one line."""


class Failed(SegDeployError):
    """The step ran and its check failed; ``data`` goes into the report."""

    def __init__(self, message, data=None):
        super(Failed, self).__init__(message)
        self.data = data or {}


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


class Context(object):
    """What steps share: options, probes, artifacts (files earlier steps made), results."""

    def __init__(self, out_dir, quick=False, stream=None, **options):
        self.out_dir = out_dir
        self.quick = quick
        self.stream = stream
        self.options = options
        self.probes = {}
        self.artifacts = {}
        self.results = OrderedDict()

    def option(self, name, default=None):
        value = self.options.get(name)
        return default if value is None else value

    def need_probe(self, name, what=None):
        """Skip unless probe ``name`` answered yes; returns its text. The reason is the probe's
        first clause (the environment section has the whole answer, with what to install)."""
        ok, text = self.probes.get(name, (False, "not probed"))
        if not ok:
            short = text.split(";")[0].strip()
            raise Skip(short if what is None else "{}: {}".format(what, short))
        return text

    def need_step(self, name):
        """Skip unless step ``name`` ran and passed."""
        result = self.results.get(name)
        if result is None:
            raise Skip("step {!r} did not run".format(name))
        if result["status"] != OK:
            raise Skip("step {!r} {}: {}".format(name, result["status"], result["reason"]))
        return result

    def need_artifact(self, key, why):
        value = self.artifacts.get(key)
        if value is None:
            raise Skip(why)
        return value


def run_step(step, ctx):
    """Run one step; returns its result record (and stores it in ``ctx.results``)."""
    start = time.time()
    data, status, reason = {}, OK, ""
    try:
        data = step.run(ctx) or {}
    except Skip as exc:
        status, reason = SKIPPED, _first_line(exc)
    except MissingDependencyError as exc:
        status, reason = SKIPPED, _first_line(exc)
    except ImportError as exc:  # a module this step needs is not installed on this device
        status = SKIPPED
        reason = "needs the Python module {!r}, which is not installed here".format(
            getattr(exc, "name", None) or _first_line(exc)
        )
    except Failed as exc:
        status, reason, data = FAILED, _first_line(exc), exc.data
    except SegDeployError as exc:
        status, reason = FAILED, _first_line(exc)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a bug or a library's own error: report it, go on with the next
        status = FAILED
        reason = "{}: {}".format(type(exc).__name__, _first_line(exc))
        data = {"traceback": traceback.format_exc().strip().splitlines()[-8:]}
    result = OrderedDict(
        [
            ("name", step.name),
            ("title", step.title),
            ("status", status),
            ("reason", reason),
            ("would_run", step.what),
            ("duration_s", round(time.time() - start, 3)),
            ("data", data),
        ]
    )
    ctx.results[step.name] = result
    return result


def run_steps(steps, ctx, progress=None):
    """Run every step in order; ``progress(index, total, step, result)`` after each."""
    total = len(steps)
    for index, step in enumerate(steps, 1):
        if progress is not None:
            progress(index, total, step, None)
        result = run_step(step, ctx)
        if progress is not None:
            progress(index, total, step, result)
    return list(ctx.results.values())
