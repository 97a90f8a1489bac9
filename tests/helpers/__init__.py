"""Test helpers for fitplan (measurement utilities; not part of the package)."""
