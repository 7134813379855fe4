"""Fixtures of the study tests: ``one_thread`` is the one the library tests use (tests/alignment/conftest.py)."""

from tests.alignment.conftest import one_thread  # noqa: F401
