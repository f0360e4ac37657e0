"""Shared fixtures."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Two busy cores: one intra-op thread is faster and deterministic (engine tests use it)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
