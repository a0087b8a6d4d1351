"""Runtime: open an engine file, pre-process a frame, run, post-process (device side)."""
