"""inferscale: measure inference scaling laws of language models."""

from inferscale.numerics import pin_this_process

__version__ = "0.1.0"

# Before any inferscale module imports torch: the CPU kernels must not depend on the machine
# (see inferscale.numerics).
pin_this_process()
