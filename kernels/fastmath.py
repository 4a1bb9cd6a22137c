"""exp and log for the CPU soft-DTW kernels, written so that LLVM can vectorise them.

numba compiles `math.exp` / `math.log` to calls into libm, which stop LLVM from vectorising a loop
(numba vectorises them only through Intel's SVML, absent from the PyPI llvmlite). The soft-min of
the DP needs three exponentials and one logarithm per cell, so in float32 we use polynomials
(a fitted 2**x and Cephes' logf, about 1 ulp) written with plain arithmetic and bit casts; a loop over pairs
then compiles to AVX2/AVX-512 code. float64 keeps the libm functions (exact, for gradcheck).

The kernels work in base 2 (see cpu.py), so the functions are `exp2_nonpos(x)`, 2**x for x <= 0 (the
soft-min only exponentiates non-positive numbers; -inf gives 2**-126 instead of 0, which no result
can see), and `log2_ge1(s)`, log2 for s >= 1 (the soft-min's sum lies in [1, 3]).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

f32, i32 = np.float32, np.int32

_EXP2_LO = f32(-126.0)  # below this 2**x is subnormal; clamping also maps -inf to a finite input
# 2**f on [-0.5, 0.5], degree 6, fitted for relative error (1e-9; float32 evaluation ~1 ulp)
_EXP2_P = tuple(f32(c) for c in (1.5345805149991065e-4, 1.3399930903688073e-3, 9.618489071726799e-3,
                                 5.550328642129898e-2, 2.4022646248340607e-1, 6.931471824645996e-1,
                                 1.0))  # fmt: skip
# log(1 + m) = m - m**2 / 2 + m**3 P(m) for |m| < 0.42 (Cephes logf)
_LOG_P = tuple(f32(c) for c in (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                                1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                                3.3333331174e-1))  # fmt: skip
_LOG2E = f32(1.44269504088896341)
_SQRTHF = f32(0.707106781186547524)
_HALF, _ONE, _ZERO = f32(0.5), f32(1.0), f32(0.0)
_I23, _I126, _I127 = i32(23), i32(126), i32(127)
_MANT_MASK, _HALF_BITS = i32(0x007FFFFF), i32(0x3F000000)


@intrinsic
def _f32_from_bits(typingctx, bits):
    # numba widens int32 arithmetic to int64: accept any integer and keep its low 32 bits
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = builder.trunc(args[0], ir.IntType(32)) if bits.bitwidth > 32 else args[0]
        return builder.bitcast(low, ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def _bits_from_f32(typingctx, x):
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


def _exp2f_nonpos(x):
    x = max(x, _EXP2_LO)
    k = np.floor(x + _HALF)
    f = x - k  # in [-0.5, 0.5]
    p0, p1, p2, p3, p4, p5, p6 = _EXP2_P
    y = (((((p0 * f + p1) * f + p2) * f + p3) * f + p4) * f + p5) * f + p6
    return y * _f32_from_bits((i32(k) + _I127) << _I23)  # times 2**k, built from its exponent bits


def _log2f_ge1(s):
    bits = _bits_from_f32(s)
    e = (bits >> _I23) - _I126  # s = m * 2**e with m in [0.5, 1)
    m = _f32_from_bits((bits & _MANT_MASK) | _HALF_BITS)
    small = m < _SQRTHF
    e = e - i32(small)
    m = m + (m if small else _ZERO) - _ONE  # now s = (1 + m) * 2**e with |m| < 0.42
    z = m * m
    p0, p1, p2, p3, p4, p5, p6, p7, p8 = _LOG_P
    y = ((((((((p0 * m + p1) * m + p2) * m + p3) * m + p4) * m + p5) * m + p6) * m + p7) * m + p8) * m * z
    return (m + (y - _HALF * z)) * _LOG2E + f32(e)


def exp2_nonpos(x):
    """2**x for x <= 0 (vectorisable in float32)."""
    return math.exp2(x)


def log2_ge1(s):
    """log2(s) for s >= 1 (vectorisable in float32)."""
    return math.log2(s)


@overload(exp2_nonpos, inline="always")
def _exp2_nonpos_impl(x):
    if x == types.float32:
        return _exp2f_nonpos
    return lambda x: math.exp2(x)


@overload(log2_ge1, inline="always")
def _log2_ge1_impl(s):
    if s == types.float32:
        return _log2f_ge1
    return lambda s: math.log2(s)
