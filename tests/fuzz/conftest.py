"""The fuzz suite uses the shared ``digits`` and ``registry`` fixtures (tests/fixtures.py)."""
