"""The one place that turns decoder failures into DataError: any FrameSource backend goes through it."""

import numpy as np
import pytest
import torch

from strg.data.decode import FrameSource, decoder_errors
from strg.errors import DataError


class FlakyBackend(FrameSource):
    """A backend written without any error handling, as a new decoder library would be used."""

    closed = 0

    def __init__(self, path, *, fail_open=None):
        self.handle = object()
        if fail_open is not None:
            raise fail_open
        self.path, self.num_frames, self.fps, self.height, self.width = path, 4, 12.0, 2, 2
        self.fail = None

    def _decode_sorted(self, indices):
        if self.fail is not None:
            raise self.fail
        return torch.zeros(len(indices), 2, 2, 3, dtype=torch.uint8)

    def close(self):
        FlakyBackend.closed += 1


@pytest.mark.parametrize("error", [RuntimeError("bad stream"), PermissionError(1, "Operation not permitted"),
                                   AttributeError("'NoneType' object has no attribute 'thread_count'"),
                                   KeyError("pts"), SyntaxError("not a JPEG"), ValueError("x")])
def test_any_library_exception_becomes_a_data_error_naming_the_file(error):
    src = FlakyBackend("clip.mp4")
    src.fail = error
    name = type(error).__name__
    with pytest.raises(DataError, match=rf"^clip.mp4: decoding failed \(corrupt or truncated\) \({name}"):
        src.get_frames([0, 2])
    closed = FlakyBackend.closed
    with pytest.raises(DataError, match=rf"^other.webm: cannot open .*{name}"):
        FlakyBackend("other.webm", fail_open=error)
    assert FlakyBackend.closed == closed + 1  # what a failed open had opened is released


def test_data_errors_and_environment_errors_pass_unchanged():
    src = FlakyBackend("clip.mp4")
    src.fail = DataError("clip.mp4: frame 3 is missing")
    with pytest.raises(DataError, match="^clip.mp4: frame 3 is missing$"):
        src.get_frames([1])
    src.fail = ImportError("No module named 'av'")  # a broken install, not a bad file
    with pytest.raises(ImportError):
        src.get_frames([1])
    src.fail = None
    assert src.get_frames(np.array([3, 0])).shape == (2, 2, 2, 3)


def test_context_manager_for_other_library_calls():
    with pytest.raises(DataError, match=r"^a.webm: cannot read its header \(OSError: boom\)$"):
        with decoder_errors("a.webm", "cannot read its header"):
            raise OSError("boom")
