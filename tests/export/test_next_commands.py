"""The `Next:` lines segexport prints run as pasted (through a shell), in the order printed."""

import os
import subprocess
import sys

from segdeploy.export.cli import main as segexport

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_next_commands_run_when_pasted(tmp_path, capsys):
    out = tmp_path / "out dir"  # a space in the path: the commands must quote it
    argv = ["--model", "regseg_tiny", "--res", "64x128", "--out", str(out), "--verify-inputs", "1"]
    assert segexport(argv) == 0
    printed = capsys.readouterr().out
    lines = printed.split("\nNext", 1)[1].splitlines()[1:]
    commands = [line.strip() for line in lines if line.startswith("  ") and line.strip()]
    assert len(commands) == 3
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for command in commands:
        # the venv's own interpreter or scripts, never a bare name that PATH may not have
        assert command.startswith(("/", "'/")), command
        result = subprocess.run(
            ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, (command, result.stderr[-2000:])
    assert (out / "frame.png").is_file()  # written by the first line, read by the others
    assert (out / "predict" / "frame_overlay.png").is_file()
    assert sys.executable in commands[0]
