"""Reliability tests use the shared fixture chain of tests/conftest.py (model_root -> server -> stub)."""
