"""CPU soft-DTW kernels (numba, parallel over tiles of pairs, pairs in the innermost loop).

The DP of one pair is a chain of dependent cells, so one pair cannot fill SIMD lanes; many pairs
can. Each kernel walks the N x M table row by row for a tile of `LANES` pairs at once, with the
pairs in the innermost loop: every cell update is a few dozen AVX instructions for 8 pairs, with
the exponentials vectorised by `fastmath`. Two rows of the table (previous and current) live in
(M + 1, LANES) buffers; tiles run in parallel (`prange`).

Conventions (1-based cells as in Cuturi & Blondel):
* R[0, 0] = 0, R[i, 0] = R[0, j] = inf, R[i, j] = C[i, j] + softmin(R[i-1, j-1], R[i-1, j], R[i, j-1])
  with softmin(r) = rmin - gamma * log(sum(exp((rmin - r) / gamma))): every exponent is <= 0 and the
  sum lies in [1, 3], so it neither overflows nor underflows for any gamma.
* Base 2: the kernels carry R' = R * scale with scale = log2(e) / gamma (an argument, in the
  cost's dtype), so that a soft-min is R'min - log2(sum(2 ** (R'min - R'))) with no multiplication
  by 1 / gamma per exponential; the cost is scaled as it is loaded and the value scaled back.
* `band` >= 0 restricts the table to |i - j| <= band (Sakoe-Chiba); band < 0 means no band.
* `lens` (B, 2) holds each pair's (n, m); its value is R[n, m]. Cells beyond are computed but never
  read, with their cost taken as 0 so that padding (even NaN) cannot reach a value or a gradient.

The training forward stores, per cell, the soft-min weights w = 2 ** (R'min - R'pred) / sum, the
probabilities that the soft path enters the cell from its diagonal, upper and left predecessor.
They are d R[i, j] / d R[pred], so the backward is Cuturi & Blondel's E recursion with no
exponential recomputed: G[i, j] = G[i+1, j+1] w_diag[i+1, j+1] + G[i+1, j] w_up[i+1, j] +
G[i, j+1] w_left[i, j+1], seeded with the output gradient at (n, m); d value / d C[i, j] = G[i, j].
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .fastmath import exp2_nonpos, log2_ge1

LANES = 64  # pairs per tile: 8 AVX2 vectors of float32 per cell step, independent of each other
INF = np.float32(np.inf)
ZERO, ONE = np.float32(0.0), np.float32(1.0)
DIAG, UP, LEFT = 0, 1, 2
# No 'nnan'/'ninf': inf marks the table's border. No 'reassoc': keep the DP's order of rounding.
FASTMATH = {"nsz", "arcp", "contract", "afn"}


@njit(inline="always")
def n_tiles(batch):
    return (batch + LANES - 1) // LANES


@njit(inline="always")
def band_range(i, m, band):
    """Columns [jlo, jhi] of row i inside the band (1-based; empty when jlo > jhi)."""
    if band < 0:
        return 1, m
    return max(1, i - band), min(m, i + band)


@njit(inline="always")
def softmin2(d, u, lft):
    """Base-2 soft-min of three predecessors. The smallest one contributes 2**0 = 1 exactly, so
    only the other two need an exponential."""
    lo, hi = min(d, u), max(d, u)
    rmin, mid = min(lo, lft), max(lo, lft)  # {rmin, mid, hi} = {d, u, lft}
    return rmin - log2_ge1(ONE + exp2_nonpos(rmin - mid) + exp2_nonpos(rmin - hi))


@njit(inline="always")
def softmin2_weights(d, u, lft):
    """Base-2 soft-min and the three predecessors' weights (they sum to 1)."""
    rmin = min(min(d, u), lft)
    ed, eu, el = exp2_nonpos(rmin - d), exp2_nonpos(rmin - u), exp2_nonpos(rmin - lft)
    total = ed + eu + el
    inv_total = ONE / total
    return rmin - log2_ge1(total), ed * inv_total, eu * inv_total, el * inv_total


@njit(inline="always")
def load_cost_row(cost, lens, b0, nb, i, jlo, jhi, scale, crow):
    """crow[j, w] = scale * cost[b0 + w, i - 1, j - 1]: one row of a tile, pairs made contiguous;
    0 beyond the pair's lengths."""
    for w in range(nb):
        n, m = lens[b0 + w, 0], lens[b0 + w, 1]
        last = min(jhi, m) if i <= n else jlo - 1
        for j in range(jlo, last + 1):
            crow[j, w] = cost[b0 + w, i - 1, j - 1] * scale
        for j in range(max(jlo, last + 1), jhi + 1):
            crow[j, w] = ZERO


@njit(inline="always")
def store_values(cur, lens, b0, nb, i, inv_scale, out):
    for w in range(nb):
        if lens[b0 + w, 0] == i:
            out[b0 + w] = cur[lens[b0 + w, 1], w] * inv_scale


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def forward(cost, lens, scale, band, out):
    """Soft-DTW values out (B,) of cost (B, N, M); no gradient."""
    B, N, M = cost.shape
    for tile in prange(n_tiles(B)):
        b0 = tile * LANES
        nb = min(LANES, B - b0)
        prev = np.full((M + 1, LANES), INF, dtype=cost.dtype)
        cur = np.empty((M + 1, LANES), dtype=cost.dtype)
        crow = np.zeros((M + 1, LANES), dtype=cost.dtype)  # lanes >= nb stay 0: finite padding
        prev[0, :] = ZERO  # R[0, 0] = 0
        for i in range(1, N + 1):
            jlo, jhi = band_range(i, M, band)
            cur[:, :] = INF
            load_cost_row(cost, lens, b0, nb, i, jlo, jhi, scale, crow)
            for j in range(jlo, jhi + 1):
                for w in range(LANES):  # the vectorised loop
                    cur[j, w] = crow[j, w] + softmin2(prev[j - 1, w], prev[j, w], cur[j - 1, w])
            store_values(cur, lens, b0, nb, i, ONE / scale, out)
            prev, cur = cur, prev


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def forward_weights(cost, lens, scale, band, out, weights):
    """As forward, and the soft-min weights (tiles, N + 1, M + 1, 3, LANES) for the backward. Row N,
    column M and the cells outside the band get zero weights: the backward reads them as padding."""
    B, N, M = cost.shape
    for tile in prange(n_tiles(B)):
        b0 = tile * LANES
        nb = min(LANES, B - b0)
        prev = np.full((M + 1, LANES), INF, dtype=cost.dtype)
        cur = np.empty((M + 1, LANES), dtype=cost.dtype)
        crow = np.zeros((M + 1, LANES), dtype=cost.dtype)
        prev[0, :] = ZERO
        for i in range(1, N + 1):
            jlo, jhi = band_range(i, M, band)
            cur[:, :] = INF
            wrow = weights[tile, i - 1]
            wrow[: jlo - 1, :, :] = ZERO  # the columns this row does not write
            wrow[jhi:, :, :] = ZERO
            load_cost_row(cost, lens, b0, nb, i, jlo, jhi, scale, crow)
            for j in range(jlo, jhi + 1):
                for w in range(LANES):
                    r, wd, wu, wl = softmin2_weights(prev[j - 1, w], prev[j, w], cur[j - 1, w])
                    cur[j, w] = crow[j, w] + r
                    wrow[j - 1, DIAG, w] = wd
                    wrow[j - 1, UP, w] = wu
                    wrow[j - 1, LEFT, w] = wl
            store_values(cur, lens, b0, nb, i, ONE / scale, out)
            prev, cur = cur, prev
        weights[tile, N, :, :, :] = ZERO


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def backward(weights, lens, band, grad_out, grad_cost):
    """grad_cost (B, N, M) = grad_out[b] * d value[b] / d cost, from forward_weights' weights."""
    B, N, M = grad_cost.shape
    for tile in prange(n_tiles(B)):
        b0 = tile * LANES
        nb = min(LANES, B - b0)
        nxt = np.zeros((M + 2, LANES), dtype=grad_cost.dtype)  # G of row i + 1 (zero: row N + 1)
        cur = np.empty((M + 2, LANES), dtype=grad_cost.dtype)
        wt = weights[tile]
        for i in range(N, 0, -1):
            jlo, jhi = band_range(i, M, band)
            cur[:, :] = ZERO
            for w in range(nb):  # the seed: d value / d R[n, m] = grad_out
                if lens[b0 + w, 0] == i:
                    cur[lens[b0 + w, 1], w] = grad_out[b0 + w]
            for j in range(jhi, jlo - 1, -1):
                for w in range(LANES):
                    cur[j, w] += (
                        nxt[j + 1, w] * wt[i, j, DIAG, w]
                        + nxt[j, w] * wt[i, j - 1, UP, w]
                        + cur[j + 1, w] * wt[i - 1, j, LEFT, w]
                    )
            for w in range(nb):
                for j in range(1, M + 1):
                    grad_cost[b0 + w, i - 1, j - 1] = cur[j, w]
            nxt, cur = cur, nxt


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def gallery_forward(dots, scale, band, out):
    """Soft-DTW out (Q, G) with cost 1 - dots, where dots (N, Q, M, G) holds the products of query
    q's frame i and gallery clip g's frame j (one matmul of the permuted frames), so that a tile of
    gallery clips is contiguous."""
    N, Q, M, G = dots.shape
    tiles_per_query = n_tiles(G)
    for tile in prange(Q * tiles_per_query):
        q = tile // tiles_per_query
        g0 = (tile % tiles_per_query) * LANES
        ng = min(LANES, G - g0)
        prev = np.full((M + 1, LANES), INF, dtype=dots.dtype)
        cur = np.empty((M + 1, LANES), dtype=dots.dtype)
        prev[0, :] = ZERO
        for i in range(1, N + 1):
            jlo, jhi = band_range(i, M, band)
            cur[:, :] = INF
            for j in range(jlo, jhi + 1):
                for w in range(ng):
                    c = scale - scale * dots[i - 1, q, j - 1, g0 + w]  # scale * (1 - dot)
                    cur[j, w] = c + softmin2(prev[j - 1, w], prev[j, w], cur[j - 1, w])
            prev, cur = cur, prev
        for w in range(ng):
            out[q, g0 + w] = prev[M, w] / scale
