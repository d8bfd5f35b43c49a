"""CUDA C++ sources of the ``cuda`` backend (kernels/cuda/*.cu, shipped as package data)."""
