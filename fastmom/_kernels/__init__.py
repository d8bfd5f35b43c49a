"""Compiled Cython kernels (built from kernels/cpu/*.pyx by setup.py)."""
