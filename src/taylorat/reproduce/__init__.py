"""Reproduction: the quick-start demo (paper tables come later)."""
