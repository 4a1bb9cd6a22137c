"""CUDA soft-DTW kernels (numba-cuda), same conventions as cpu.py (base-2 table R' = R * scale).

Training (`forward`, `backward`): one block of 32 threads (one warp) per pair. Thread L owns row
r0 + L + 1 of a tile of 32 rows and sweeps the columns one step behind thread L - 1 (an
anti-diagonal wavefront), so R' stays in registers: the only traffic is one float per step through
a double-buffered shared array, one __syncthreads per step, and one global row that carries the
tile's last row to the next tile. Tiles repeat down the table, so there is no cap on N or M (unlike
Maghoumi's 1,024-thread blocks), and per pair the kernel keeps only the (M + 1) row buffer instead of
the whole R table. A band restricts the steps each tile walks.

The forward stores the three soft-min weights of each cell (coalesced: indexed by tile, step and
thread); the backward runs the wavefront in reverse and passes G * weight products between
threads, so it evaluates no exponential.

Gallery (`gallery_forward`): forward only, one thread per (query, gallery) pair, row by row, with the
previous row in a global scratch laid out (column, pair) so that every access is coalesced.

Kernels are built per float type (`kernels_for(float32)`) so that float32 input runs float32
arithmetic end to end: every constant is a typed closure constant and `math.exp2` / `math.log2`
map to libdevice's exp2f / log2f (the tests check the PTX for `.f64`).
"""

from __future__ import annotations

import math
from functools import cache
from types import SimpleNamespace

import numpy as np
from numba import cuda

WARP = 32
DIAG, UP, LEFT = 0, 1, 2


def n_row_tiles(n: int) -> int:
    return (n + WARP - 1) // WARP


@cache
def kernels_for(dtype: np.dtype) -> SimpleNamespace:
    """The four kernels compiled lazily for one float dtype (np.float32 or np.float64)."""
    ftype = np.dtype(dtype).type
    INF, ZERO, ONE = ftype(np.inf), ftype(0.0), ftype(1.0)  # typed constants: no float64 promotion
    # Device functions are inlined by numba itself: no call overhead, and compile_ptx can build the
    # kernels for a given compute capability without a GPU (a separately compiled device function
    # would ask the driver for the current device's).
    device = cuda.jit(device=True, inline="always")

    @device
    def in_band(i, j, band):
        return band < 0 or abs(i - j) <= band

    @device
    def valid(i, j, n, m, band):
        """Is (i, j) a cell of the pair's table (1-based, inside lengths and band)?"""
        return 1 <= i and i <= n and 1 <= j and j <= m and in_band(i, j, band)

    @device
    def softmin(d, u, lft):
        """Base-2 soft-min; the smallest predecessor contributes exactly 1, so two exp2 suffice."""
        lo, hi = min(d, u), max(d, u)
        rmin, mid = min(lo, lft), max(lo, lft)
        return rmin - math.log2(ONE + math.exp2(rmin - mid) + math.exp2(rmin - hi))

    @device
    def softmin_weights(d, u, lft):
        rmin = min(min(d, u), lft)
        ed, eu, el = math.exp2(rmin - d), math.exp2(rmin - u), math.exp2(rmin - lft)
        total = ed + eu + el
        inv_total = ONE / total
        return rmin - math.log2(total), ed * inv_total, eu * inv_total, el * inv_total

    @device
    def step_range(r0, m, band):
        """Steps a 32-row tile starting after row r0 must walk (thread L is at column s - L + 1),
        one column wider than the band on each side so that every border value is written."""
        if band < 0:
            return 0, m + WARP - 1
        return max(0, r0 + 1 - band - 2), min(m + WARP - 1, r0 + WARP + band + WARP)

    @cuda.jit
    def forward(cost, lens, scale, band, store_weights, weights, row_buf, out):
        """values out (B,) of cost (B, N, M); weights (B, tiles, 3, M + 31, 32) when store_weights;
        row_buf (B, M + 1) scratch. Launch: B blocks of 32 threads."""
        p = cuda.blockIdx.x
        lane = cuda.threadIdx.x
        n, m = lens[p, 0], lens[p, 1]
        shared = cuda.shared.array((2, WARP), dtype=ftype)
        inv_scale = ONE / scale
        for tile in range((n + WARP - 1) // WARP):
            r0 = tile * WARP
            i = r0 + lane + 1
            left = INF  # R'[i, 0]
            up_prev = INF  # R'[i - 1, j - 1] once shifted
            s_begin, s_end = step_range(r0, m, band)
            shared[(s_begin + 1) % 2, lane] = INF  # what "step s_begin - 1" published
            cuda.syncthreads()
            for s in range(s_begin, s_end):
                j = s - lane + 1
                if lane == 0:  # the row above the tile comes from the previous tile, via memory
                    up = row_buf[p, j] if valid(r0, j, n, m, band) else INF
                else:
                    up = shared[(s + 1) % 2, lane - 1]
                diag = up_prev
                if j == 1:
                    diag = ZERO if i == 1 else INF  # R'[i - 1, 0]
                r = INF
                if valid(i, j, n, m, band):
                    if store_weights:
                        soft, wd, wu, wl = softmin_weights(diag, up, left)
                        weights[p, tile, DIAG, s, lane] = wd
                        weights[p, tile, UP, s, lane] = wu
                        weights[p, tile, LEFT, s, lane] = wl
                    else:
                        soft = softmin(diag, up, left)
                    r = cost[p, i - 1, j - 1] * scale + soft
                    if i == n and j == m:
                        out[p] = r * inv_scale
                    if lane == WARP - 1:
                        row_buf[p, j] = r
                left = r
                up_prev = up
                shared[s % 2, lane] = r
                cuda.syncthreads()

    @cuda.jit
    def backward(weights, lens, band, grad_out, row_buf, grad_cost):
        """grad_cost (B, N, M) (zero-filled by the caller) from forward's weights; row_buf (B, M + 2)
        scratch. Launch: B blocks of 32 threads."""
        p = cuda.blockIdx.x
        lane = cuda.threadIdx.x
        n, m = lens[p, 0], lens[p, 1]
        to_up = cuda.shared.array((2, WARP), dtype=ftype)  # G * w_up, for the cell above
        to_diag = cuda.shared.array((2, WARP), dtype=ftype)  # G * w_diag, for the cell above-left
        for tile in range((n + WARP - 1) // WARP - 1, -1, -1):
            r0 = tile * WARP
            i = r0 + lane + 1
            from_right = ZERO  # G[i, j + 1] * w_left[i, j + 1]
            from_below_diag = ZERO  # G[i + 1, j + 1] * w_diag[i + 1, j + 1]
            carry_diag = ZERO  # thread 0: its last G * w_diag, for the row buffer
            s_begin, s_end = step_range(r0, m, band)
            to_up[s_end % 2, lane] = ZERO  # what "step s_end" published
            to_diag[s_end % 2, lane] = ZERO
            cuda.syncthreads()
            for s in range(s_end - 1, s_begin - 1, -1):
                j = s - lane + 1
                if lane == WARP - 1:  # the row below the tile comes from the next tile, via memory
                    below = ZERO
                    if valid(i + 1, j, n, m, band) or valid(i + 1, j + 1, n, m, band):
                        below = row_buf[p, j]
                else:
                    below = to_up[(s + 1) % 2, lane + 1] + from_below_diag
                    from_below_diag = to_diag[(s + 1) % 2, lane + 1]
                g_up = ZERO
                g_diag = ZERO
                if valid(i, j, n, m, band):
                    g = from_right + below
                    if i == n and j == m:
                        g += grad_out[p]
                    grad_cost[p, i - 1, j - 1] = g
                    from_right = g * weights[p, tile, LEFT, s, lane]
                    g_up = g * weights[p, tile, UP, s, lane]
                    g_diag = g * weights[p, tile, DIAG, s, lane]
                else:
                    from_right = ZERO
                if lane == 0 and 0 <= j and j <= m:
                    row_buf[p, j] = g_up + carry_diag  # all that row r0 + 1 gives to cell (r0, j)
                    carry_diag = g_diag
                to_up[s % 2, lane] = g_up
                to_diag[s % 2, lane] = g_diag
                cuda.syncthreads()

    @cuda.jit
    def gallery_forward(dots, scale, band, row, out):
        """out (Q, G) with cost 1 - dots, dots (N, Q, M, G); row (M + 1, Q * G) scratch. Launch: one
        thread per (q, g) pair."""
        N, Q, M, G = dots.shape
        pair = cuda.grid(1)
        if pair >= Q * G:
            return
        q, g = pair // G, pair % G
        for j in range(M + 1):
            row[j, pair] = INF  # R'[0, j >= 1]
        left = INF
        for i in range(1, N + 1):
            diag = ZERO if i == 1 else INF  # R'[i - 1, 0]
            left = INF  # R'[i, 0]
            for j in range(1, M + 1):
                up = row[j, pair]
                r = INF
                if in_band(i, j, band):
                    r = (ONE - dots[i - 1, q, j - 1, g]) * scale + softmin(diag, up, left)
                diag = up
                left = r
                row[j, pair] = r
        out[q, g] = left / scale

    return SimpleNamespace(forward=forward, backward=backward, gallery_forward=gallery_forward)
