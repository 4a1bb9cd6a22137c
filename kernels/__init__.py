"""Soft-DTW kernels (CPU numba and numba.cuda); installed as fgar_cli.kernels."""
