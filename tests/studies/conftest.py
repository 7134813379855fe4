"""Fixtures of the study tests: ``one_thread`` is the one the library tests use (tests/alignment/conftest.py);
``quick_toy_policy`` the quick toy base policy, pretrained once for the session (about a minute on one thread) and
shared by the flow studies, as a researcher reuses one with ``--base-policy``."""

import pytest
import torch

from tests.alignment.conftest import one_thread  # noqa: F401


@pytest.fixture(scope="session")
def quick_toy_policy(tmp_path_factory):
    from studies.toy_policy import ensure_toy_base_policy

    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # as one_thread: the toy models are dominated by per-op overhead
    try:
        return ensure_toy_base_policy(tmp_path_factory.mktemp("toy") / "base-policy", quick=True, progress=False)
    finally:
        torch.set_num_threads(previous)
