"""Encoders, readouts, heads and the Lightning module."""
