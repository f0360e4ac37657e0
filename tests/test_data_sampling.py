"""Frame sampling: strides in frames or seconds, uniform test clips, short videos."""

import numpy as np
import pytest

from strg.data.sampling import clip_indices, clip_span, random_clip_start, stride_in_frames, uniform_clip_starts


def test_stride_units():
    assert stride_in_frames(4, "frames", 30) == 4
    assert stride_in_frames(1 / 6, "seconds", 24) == pytest.approx(4)
    assert stride_in_frames(1 / 6, "seconds", 30) == pytest.approx(5)
    with pytest.raises(ValueError, match="unit"):
        stride_in_frames(1, "minutes", 24)


def test_clip_indices_and_short_video_repeats_last_frame():
    np.testing.assert_array_equal(clip_indices(3, 4, 4, first=10, last=100), [13, 17, 21, 25])
    np.testing.assert_array_equal(clip_indices(0, 4, 4, first=0, last=4), [0, 4, 4, 4])
    np.testing.assert_array_equal(clip_indices(0, 4, 2.5, first=0, last=100), [0, 2, 5, 8])  # round half even
    assert clip_span(32, 4) == 125


def test_uniform_and_random_starts():
    starts = uniform_clip_starts(length=100, span=21, num_clips=4)
    np.testing.assert_array_equal(starts, np.round(79 * (np.arange(4) + 0.5) / 4))
    assert uniform_clip_starts(100, 21, 1).tolist() == [40]  # one clip: the middle
    assert uniform_clip_starts(10, 21, 3).tolist() == [0, 0, 0]
    rng = np.random.default_rng(0)
    draws = {random_clip_start(30, 21, rng) for _ in range(300)}
    assert draws == set(range(10))  # every valid start, never one that runs off the end
