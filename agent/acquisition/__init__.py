"""Scanning the smear: illumination, autofocus, focus surface, scan planning, field capture."""
