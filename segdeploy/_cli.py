"""What every segdeploy command line shares. Python 3.6 compatible (device-side CLIs use it)."""

from ._version import __version__
from .errors import SegDeployError


def add_version(parser):
    """``--version``: the program and segdeploy's version, then exit 0."""
    parser.add_argument(
        "--version", action="version", version="%(prog)s (segdeploy) " + __version__
    )
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
