"""What every segdeploy command line shares. Python 3.6 compatible (device-side CLIs use it)."""

from . import __version__


def add_version(parser):
    """``--version``: the program and segdeploy's version, then exit 0."""
    parser.add_argument(
        "--version", action="version", version="%(prog)s (segdeploy) " + __version__
    )
    return parser
