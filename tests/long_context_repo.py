"""The session's stand-in served at another max_length: moved to common/long_context_repo.py (the
benchmarks use it too); kept here for the tests that import it from tests."""

from common.long_context_repo import serve_at

__all__ = ["serve_at"]
