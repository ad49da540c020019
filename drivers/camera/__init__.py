"""Microscope camera backends."""
