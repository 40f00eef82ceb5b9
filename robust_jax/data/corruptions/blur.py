"""Corruptions of this family (filled in by the corruption port)."""
CORRUPTIONS = {}
