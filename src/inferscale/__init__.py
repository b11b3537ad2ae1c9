"""inferscale: measure inference scaling laws of language models."""

__version__ = "0.1.0"
