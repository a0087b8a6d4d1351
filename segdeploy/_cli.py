"""What every segdeploy command line shares (docs/design.md, "Command-line conventions"):
``make_parser`` (help wrapped to 80 columns, examples in the epilog), ``add_common_args``
(``--version``, ``-v/-q``, ``--plugin``), the verbosity ``Printer`` and ``run_main`` (one line
and exit 2 for a user's mistake, one line and 130/143 for Ctrl-C/SIGTERM).

Python 3.6 compatible (device-side CLIs use it).
"""

import argparse
import textwrap

from ._version import __version__
from .errors import SegDeployError

HELP_WIDTH = 80


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Option help wrapped to 80 columns whatever the terminal; the description and the epilog
    as written (``make_parser`` wraps the description, the examples are lines of their own)."""

    def __init__(self, prog):
        argparse.RawDescriptionHelpFormatter.__init__(
            self, prog, width=HELP_WIDTH, max_help_position=30
        )


def make_parser(prog, description, examples=(), notes=None):
    """An ArgumentParser with segdeploy's conventions: ``description`` (one paragraph, wrapped
    here), then ``notes`` (text kept as written) and ``examples`` (command lines; a line ending
    in a backslash continues) in the epilog."""
    epilog = []
    if notes:
        epilog.append(notes.rstrip("\n"))
    if examples:
        epilog.append("examples:\n" + "\n".join("  " + line for line in examples))
    return argparse.ArgumentParser(
        prog=prog,
        description=textwrap.fill(" ".join(description.split()), HELP_WIDTH - 1),
        epilog="\n\n".join(epilog) or None,
        formatter_class=_Formatter,
    )


def add_version(parser):
    """``--version``: ``NAME X.Y.Z`` (the command and segdeploy's version), then exit 0."""
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    return parser


PLUGIN_HELP = (
    "TensorRT plugin library to load (repeatable), after the engine's fingerprint check; "
    "the only libraries ever loaded"
)


def add_plugin(parser, help=PLUGIN_HELP):
    """``--plugin LIB.so`` (repeatable) -> ``args.plugin``, a list."""
    parser.add_argument("--plugin", action="append", default=[], metavar="LIB.so", help=help)
    return parser


def add_common_args(parser, plugin=True, plugin_help=PLUGIN_HELP):
    """``--version``, ``-v/-q`` and (for commands that open or build TensorRT engines)
    ``--plugin``: what every console script takes, spelled the same."""
    add_version(parser)
    add_verbosity(parser)
    if plugin:
        add_plugin(parser, plugin_help)
    return parser


QUIET, NORMAL, VERBOSE = -1, 0, 1


def plural(count, word, words=None):
    """'1 frame', '2 frames', '0 frames' (``words``: an irregular plural)."""
    return "{} {}".format(count, word if count == 1 else (words or word + "s"))


def add_verbosity(parser):
    """``-v`` (more detail, repeatable) and ``-q`` (only errors and the final result line)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="print more detail (repeat for even more)",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print only errors and the final result line",
    )
    return parser


def verbosity(args):
    """QUIET (-1), NORMAL (0) or the -v count (1, 2, ...) of parsed ``args``."""
    if getattr(args, "quiet", False):
        return QUIET
    return int(getattr(args, "verbose", 0) or 0)


class Printer(object):
    """print() by verbosity: ``info`` unless -q, ``detail`` with -v, ``result`` always."""

    def __init__(self, level=NORMAL, stream=None):
        import sys

        self.level = level
        self.stream = stream or sys.stdout

    def _emit(self, text):
        print(text, file=self.stream)
        self.stream.flush()

    def result(self, text):
        self._emit(text)

    def info(self, text):
        if self.level > QUIET:
            self._emit(text)

    def detail(self, text):
        if self.level >= VERBOSE:
            self._emit(text)


def error_line(prog, exc, first_line=False):
    """``prog: error: <message>`` for a SegDeployError: the whole message, or with
    ``first_line`` only the first line of the stripped message (the class name when empty)."""
    text = str(exc)
    if first_line:
        text = text.strip()
        text = text.splitlines()[0] if text else type(exc).__name__
    return "{}: error: {}".format(prog, text)


def run_main(prog, body, interrupted, first_line=False, signal_exit=False):
    """Run ``body()`` (a command's work; it returns the exit code, None meaning 0) the way every
    segdeploy command does: a SegDeployError prints ``error_line`` on stderr and returns its
    exit code (2); Ctrl-C prints ``prog: interrupted; <interrupted>`` (a string, or a callable
    giving it then) and returns 130, or with
    ``signal_exit`` 128 + the signal the interruption carries (SIGTERM: 143), as a shell does."""
    import sys

    try:
        code = body()
    except SegDeployError as exc:
        print(error_line(prog, exc, first_line), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        if callable(interrupted):  # what was done, known only now
            interrupted = interrupted()
        print("{}: interrupted; {}".format(prog, interrupted), file=sys.stderr)
        return 128 + getattr(exc, "signum", 2) if signal_exit else 130
    return 0 if code is None else code
