"""Progress bars that do not flood a log file.

On a terminal :func:`progress_bar` is tqdm as usual. When stderr is not a terminal (output
redirected to a file, a batch job, a pipe), tqdm's redraws (a carriage return per update, all on
one line) would pile up in the file; there the bar writes one plain line at most every
``STRG_PROGRESS_INTERVAL`` seconds (default 60) and one at the end, e.g.
``train:  50%|#####     | 500/1000 [01:40<01:40, 5.00it/s, loss=1.23]``.
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm


class _Lines:
    """A file for tqdm that turns each redraw into one line (blank redraws are dropped)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").replace("\x1b[A", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)``; lines at most every STRG_PROGRESS_INTERVAL seconds when stderr
    is not a terminal (module docstring)."""
    stream = kwargs.pop("file", None) or sys.stderr
    if not kwargs.get("disable") and not (hasattr(stream, "isatty") and stream.isatty()):
        try:
            interval = float(os.environ.get("STRG_PROGRESS_INTERVAL", "60"))
        except ValueError:
            interval = 60.0
        kwargs.update(file=_Lines(stream), mininterval=interval, maxinterval=max(interval, 10.0), ascii=True,
                      dynamic_ncols=False, ncols=100, leave=True)
    else:
        kwargs["file"] = stream
    return tqdm(iterable, **kwargs)


__all__ = ["progress_bar"]
