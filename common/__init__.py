"""Domain logic of the mammography domain-shift pipeline (no argument parsing here)."""

__version__ = "0.1.0"
