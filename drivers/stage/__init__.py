"""Motorized XYZ stage drivers."""
