"""Pytest set-up shared by the test suite and the package's docstring examples."""

from __future__ import annotations

import pytest
import torch
from _pytest.doctest import DoctestItem


@pytest.fixture(autouse=True)
def _seed_docstring_examples(request: pytest.FixtureRequest) -> None:
    # Each docstring example starts from the same random state, whatever ran before it, so
    # adding or reordering examples never changes another example's random inputs.
    if isinstance(request.node, DoctestItem):
        torch.manual_seed(0)
