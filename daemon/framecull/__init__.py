"""framecull: keeps the few novel frames of a fixed camera."""

__version__ = "0.1.0"
