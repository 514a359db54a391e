"""Fixtures of the export tests: the anny bodies come from tests/conftest.py."""
