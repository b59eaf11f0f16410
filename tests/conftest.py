"""Puts tests/ on sys.path (pytest inserts a conftest's folder) so every test can import `support`."""
