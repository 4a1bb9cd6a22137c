"""Soft-DTW kernels, installed as `fgar_cli.kernels`; the public API is `fgar_cli.softdtw`.

* `cpu.py`: numba CPU kernels (parallel over tiles of pairs, pairs in the SIMD lanes);
  `fastmath.py`: the vectorisable float32 exp2 / log2 they use.
* `cuda.py`: numba-cuda kernels (one warp per pair for training, one thread per pair for the
  gallery). Imported only when a CUDA tensor arrives.

Why numba-cuda and not numba's built-in CUDA target: the built-in target (`numba.cuda` inside the
numba package) is deprecated since numba 0.61 and frozen; NVIDIA's `numba-cuda` package is the
maintained target and supports the CUDA 13 toolkit that torch's cu130 wheels ship (sm_90, NVVM
from the `nvidia-nvvm` wheel). Installing it changes no import: numba hands `numba.cuda` over to
it (`numba.cuda.implementation == "NVIDIA"`). The code itself uses only the API common to both
(`cuda.jit`, shared arrays, `syncthreads`, `external_stream`, `as_cuda_array`, `compile_ptx`) and
no warp shuffles, so the kernels also run under numba's CUDA simulator (which has no shuffles).
The requirement is `numba-cuda[cu13]>=0.30` (the `cu13` extra brings NVVM, needed to compile).
"""
