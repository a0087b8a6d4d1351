"""segexport's progress lines: numbered, timed steps naming final paths, not the staging one."""

import os
import sys
import time


class Steps:
    """Numbered, timed progress lines: ``[3/9] export ONNX ... done in 1.2 s``."""

    def __init__(self, total, stream=None, staging=None):
        self.total = total
        self.index = 0
        self.stream = stream or sys.stdout
        self.durations = {}
        # files are written into a staging folder and moved into --out at the end: the lines
        # name the paths the user will find
        self._stage = (
            (os.path.join(staging.path, ""), os.path.join(staging.out_dir, ""))
            if staging is not None and staging.path
            else None
        )

    def run(self, title, fn, *args, **kwargs):
        self.index += 1
        print("[{}/{}] {} ...".format(self.index, self.total, title), file=self.stream, flush=True)
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        seconds = time.perf_counter() - start
        self.durations[title] = round(seconds, 3)
        print("      done in {:.1f} s".format(seconds), file=self.stream, flush=True)
        return result

    def say(self, text):
        if self._stage:
            text = text.replace(*self._stage)
        print("      " + text, file=self.stream, flush=True)
