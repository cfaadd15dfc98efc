import copy

import pytest
import torch

from tests.rl.rl_support import pretrained_tiny


@pytest.fixture(autouse=True)
def one_thread():
    # The tiny model's matrices are far too small to gain from a second thread, and on a
    # loaded two-core machine OpenMP spin-waiting makes each op ~100x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def pretrained():
    """The briefly pre-trained tiny model (see rl_support), built once per session."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return pretrained_tiny()
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def policy_model(pretrained):
    """A fresh copy of the pre-trained tiny model and its tokenizer."""
    model, tokenizer = pretrained
    return copy.deepcopy(model), tokenizer
