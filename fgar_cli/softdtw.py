"""Soft-DTW (Cuturi & Blondel 2017): the differentiable alignment cost between frame sequences.

Public API:
* `soft_dtw(cost, gamma, band=None, lengths=None)`: values (B,) of cost matrices (B, N, M),
  differentiable with respect to the cost (any differentiable cost works).
* `cosine_cost(x, y)`: (B, N, M) = 1 - cos(x_i, y_j), the method's cost.
* `pairwise_soft_dtw(queries, gallery, gamma, band=None)`: (Q, G) values with cosine cost for every
  query and gallery clip, forward only, in chunks (never Q x G x T x T at once).
* `SoftDTW(gamma, band=None, normalize=False)`: module on frame sequences; normalize=True gives
  the soft-DTW divergence D(x, y) - (D(x, x) + D(y, y)) / 2.

CPU tensors run the numba kernels of `fgar_cli.kernels.cpu`, CUDA tensors the numba-cuda kernels of
`fgar_cli.kernels.cuda` (launched on torch's current stream, no host synchronisation). float32
and float64 are computed in their own precision; other float types in float32.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor, nn

from fgar_cli.errors import FgarError

_CPU_CHUNK_BYTES = 8 << 20  # gallery products per chunk: stays in the L3 cache between matmul and DP
_CUDA_CHUNK_BYTES = 512 << 20


def _cpu_kernels():
    from fgar_cli.kernels import cpu  # imported on first use: numba takes a quarter of a second to import

    return cpu


def _cuda_kernels(dtype: torch.dtype):
    from fgar_cli.kernels import cuda  # imported on first use: numba.cuda is slow to import

    return cuda, cuda.kernels_for(np.float32 if dtype == torch.float32 else np.float64)


def _launch(kernel, blocks: int, threads: int, device: torch.device, *args) -> None:
    """Launch a numba-cuda kernel on torch's current stream of `device`. Tensors are handed over
    as views (no copy, no synchronisation); small grids are expected (one block per pair)."""
    from numba import cuda

    index = device.index if device.index is not None else torch.cuda.current_device()
    with cuda.gpus[index], warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Grid size")
        stream = cuda.external_stream(torch.cuda.current_stream(device).cuda_stream)
        views = [cuda.as_cuda_array(a, sync=False) if isinstance(a, Tensor) else a for a in args]
        kernel[blocks, threads, stream](*views)


def _scale(gamma: float, dtype: torch.dtype):
    """The kernels' base-2 scale log2(e) / gamma, in the cost's precision."""
    value = math.log2(math.e) / gamma
    return np.float32(value) if dtype == torch.float32 else np.float64(value)


def _check_band(band: int | None, gap: int, where: str) -> int:
    if band is None:
        return -1
    if band < 0:
        raise FgarError(f"{where}: band must be >= 0 or None, got {band}")
    if band < gap:
        raise FgarError(f"{where}: band {band} is narrower than |N - M| = {gap}, so no alignment path fits in it")
    return int(band)


def _check_gamma(gamma: float, where: str) -> float:
    if not (math.isfinite(gamma) and gamma > 0):
        raise FgarError(f"{where}: gamma must be a positive number, got {gamma}")
    return float(gamma)


def _lengths(cost: Tensor, lengths: Tensor | None) -> tuple[Tensor, int]:
    """Each pair's (n, m) as an int64 (B, 2) tensor on the cost's device, and max |n - m|."""
    B, N, M = cost.shape
    if lengths is None:
        lens = torch.empty(B, 2, dtype=torch.int64, device=cost.device)  # filled on the device: no copy
        lens[:, 0], lens[:, 1] = N, M
        return lens, abs(N - M)
    if tuple(lengths.shape) != (B, 2):
        raise FgarError(f"soft_dtw: lengths must have shape ({B}, 2), got {tuple(lengths.shape)}")
    host = lengths.detach().to("cpu", torch.int64)  # a CUDA tensor here costs one synchronisation
    if (host < 1).any() or (host[:, 0] > N).any() or (host[:, 1] > M).any():
        raise FgarError(f"soft_dtw: lengths must lie in [1, {N}] x [1, {M}] (the cost's N x M)")
    gap = int((host[:, 0] - host[:, 1]).abs().max())
    if cost.is_cuda:
        host = host.pin_memory()  # so that the copy below is asynchronous
    return host.to(cost.device, non_blocking=True).contiguous(), gap


class _SoftDTWFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cost: Tensor, gamma: float, band: int, lens: Tensor) -> Tensor:
        cost = cost.detach().contiguous()
        need_grad = ctx.needs_input_grad[0]
        if cost.is_cuda:
            values, saved = _cuda_forward(cost, gamma, band, lens, need_grad)
        else:
            values, saved = _cpu_forward(cost, gamma, band, lens, need_grad)
        ctx.saved = saved
        ctx.band, ctx.shape = band, cost.shape
        ctx.save_for_backward(lens)
        return values

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        (lens,) = ctx.saved_tensors
        weights = ctx.saved
        grad_out = grad_out.detach().to(weights.dtype).contiguous()
        if grad_out.is_cuda:
            grad = _cuda_backward(weights, lens, ctx.band, grad_out, ctx.shape)
        else:
            grad = _cpu_backward(weights, lens, ctx.band, grad_out, ctx.shape)
        return grad, None, None, None


def _cpu_forward(cost: Tensor, gamma: float, band: int, lens: Tensor, need_grad: bool):
    cpu = _cpu_kernels()
    B, N, M = cost.shape
    out = torch.empty(B, dtype=cost.dtype)
    scale = _scale(gamma, cost.dtype)
    if not need_grad:
        cpu.forward(cost.numpy(), lens.numpy(), scale, band, out.numpy())
        return out, None
    weights = torch.empty(cpu.n_tiles(B), N + 1, M + 1, 3, cpu.LANES, dtype=cost.dtype)
    cpu.forward_weights(cost.numpy(), lens.numpy(), scale, band, out.numpy(), weights.numpy())
    return out, weights


def _cpu_backward(weights: Tensor, lens: Tensor, band: int, grad_out: Tensor, shape) -> Tensor:
    grad = torch.empty(shape, dtype=weights.dtype)
    _cpu_kernels().backward(weights.numpy(), lens.numpy(), band, grad_out.numpy(), grad.numpy())
    return grad


def _cuda_forward(cost: Tensor, gamma: float, band: int, lens: Tensor, need_grad: bool):
    module, kernels = _cuda_kernels(cost.dtype)
    B, N, M = cost.shape
    out = torch.empty(B, dtype=cost.dtype, device=cost.device)
    row_buf = torch.empty(B, M + 2, dtype=cost.dtype, device=cost.device)
    shape = (B, module.n_row_tiles(N), 3, M + module.WARP - 1, module.WARP) if need_grad else (1,) * 5
    weights = torch.empty(shape, dtype=cost.dtype, device=cost.device)
    scale = _scale(gamma, cost.dtype)
    _launch(kernels.forward, B, module.WARP, cost.device, cost, lens, scale, band, need_grad, weights, row_buf, out)
    return out, (weights if need_grad else None)


def _cuda_backward(weights: Tensor, lens: Tensor, band: int, grad_out: Tensor, shape) -> Tensor:
    module, kernels = _cuda_kernels(weights.dtype)
    B, N, M = shape
    grad = torch.zeros(shape, dtype=weights.dtype, device=weights.device)
    row_buf = torch.empty(B, M + 2, dtype=weights.dtype, device=weights.device)
    _launch(kernels.backward, B, module.WARP, weights.device, weights, lens, band, grad_out, row_buf, grad)
    return grad


def soft_dtw(cost: Tensor, gamma: float, band: int | None = None, lengths: Tensor | None = None) -> Tensor:
    """Soft-DTW values (B,) of cost matrices (B, N, M); differentiable with respect to `cost`.

    `band` is a Sakoe-Chiba radius: cell (i, j) is used when |i - j| <= band, so it must be at least
    |n - m|. `lengths` (B, 2) gives each pair's true (n, m) in a padded batch (cells beyond are
    ignored, whatever they hold); on CUDA pass it as a CPU tensor to avoid a synchronisation.
    """
    if cost.dim() != 3 or 0 in cost.shape:
        raise FgarError(f"soft_dtw: cost must have shape (B, N, M) with N, M >= 1, got {tuple(cost.shape)}")
    if not cost.is_floating_point():
        raise FgarError(f"soft_dtw: cost must be a float tensor, got {cost.dtype}")
    gamma = _check_gamma(gamma, "soft_dtw")
    lens, gap = _lengths(cost, lengths)
    band_value = _check_band(band, gap, "soft_dtw")
    if cost.dtype not in (torch.float32, torch.float64):
        return _SoftDTWFunction.apply(cost.float(), gamma, band_value, lens).to(cost.dtype)
    return _SoftDTWFunction.apply(cost, gamma, band_value, lens)


def _inverse_norms(x: Tensor) -> Tensor:
    """1 / |x_i| per frame (B, N, 1); a zero frame gets 1e12, so it stays zero (cos = 0)."""
    return torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min_(1e-12).reciprocal_()


def unit_frames(x: Tensor) -> Tensor:
    """Frames scaled to unit length: the normalisation of every cosine cost in fgar (training, gallery)."""
    return x * _inverse_norms(x)


class _CosineCost(torch.autograd.Function):
    """1 - cos with a hand-written backward: autograd through F.normalize took 1.5 to 2 times as long
    (a dozen elementwise passes over the frames), and at T = 32, F = 128 the cost's three matmuls
    and normalisation are most of a training step's soft-DTW time (docs/PERFORMANCE.md)."""

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor) -> Tensor:
        inv_x, inv_y = _inverse_norms(x), _inverse_norms(y)
        unit_x, unit_y = x * inv_x, y * inv_y
        ctx.save_for_backward(unit_x, unit_y, inv_x, inv_y)
        return torch.bmm(unit_x, unit_y.transpose(1, 2)).neg_().add_(1.0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        unit_x, unit_y, inv_x, inv_y = ctx.saved_tensors
        # d cost / d unit_x = -grad @ unit_y =: -r; through u = x / |x|: (u (u . r) - r) / |x|.
        # Scaling grad's rows by 1 / |x| first is cheaper: grad (B, N, M) is smaller than (B, N, F).
        r_x = torch.bmm(grad * inv_x, unit_y)
        r_y = torch.bmm(grad.transpose(1, 2) * inv_y, unit_x)
        grad_x = torch.addcmul(r_x.neg_(), unit_x, torch.linalg.vecdot(r_x, unit_x).unsqueeze(-1), value=-1)
        grad_y = torch.addcmul(r_y.neg_(), unit_y, torch.linalg.vecdot(r_y, unit_y).unsqueeze(-1), value=-1)
        return grad_x, grad_y


class _BatchCosineCost(torch.autograd.Function):
    """1 - cos between the frames of pairs of clips of one batch, from one Gram matrix of all frames.

    Every pair (rows[p], cols[p]) reads its (T, T) block of the (B T, B T) Gram matrix: one matrix
    multiply instead of one per pair, and the backward is one more, since the Gram matrix is
    symmetric (d unit = (dG + dG^T) unit, with dG + dG^T built block by block)."""

    @staticmethod
    def forward(ctx, x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        B, T, F = x.shape
        inv = _inverse_norms(x)
        unit = x * inv
        flat = unit.reshape(B * T, F)
        blocks = (flat @ flat.T).view(B, T, B, T).permute(0, 2, 1, 3)  # (B, B, T, T) view
        ctx.save_for_backward(unit, inv, rows, cols)
        return blocks[rows, cols].neg_().add_(1.0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        unit, inv, rows, cols = ctx.saved_tensors
        B, T, F = unit.shape
        blocks = unit.new_zeros(B * B, T, T)  # d loss / d Gram, block (i, j) for each pair, by pair
        blocks[rows * B + cols] = grad.neg()
        blocks = blocks.view(B, B, T, T)
        # (dG + dG^T) laid out as the (B T, B T) matrix: [i, t, j, s] = dG[i, j, t, s] + dG[j, i, s, t]
        sym = torch.add(blocks.permute(0, 2, 1, 3), blocks.permute(1, 3, 0, 2), out=unit.new_empty(B, T, B, T))
        r = (sym.view(B * T, B * T) @ unit.reshape(B * T, F)).view(B, T, F)  # d loss / d unit
        grad_x = torch.addcmul(r, unit, torch.linalg.vecdot(r, unit).unsqueeze(-1), value=-1).mul_(inv)
        return grad_x, None, None


def batch_cosine_cost(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Costs (P, T, T) = 1 - cos(x[rows[p]]_i, x[cols[p]]_j) for pairs of clips of one batch x (B, T, F);
    differentiable (once) with respect to x. What L_AV training runs (`losses.alignment_distances`)."""
    if x.dim() != 3 or rows.shape != cols.shape or rows.dim() != 1:
        raise FgarError(f"batch_cosine_cost: need x (B, T, F) and pair indices (P,), got {tuple(x.shape)}")
    return _BatchCosineCost.apply(x, rows, cols)


def cosine_cost(x: Tensor, y: Tensor) -> Tensor:
    """Cost (B, N, M) = 1 - cos(x_i, y_j) for frames x (B, N, F) and y (B, M, F); differentiable
    (once) with respect to both. Zero frames count as cos = 0, as with F.normalize."""
    if x.dim() != 3 or y.dim() != 3 or x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise FgarError(f"cosine_cost: need x (B, N, F) and y (B, M, F), got {tuple(x.shape)} and {tuple(y.shape)}")
    return _CosineCost.apply(x, y)


@torch.no_grad()
def pairwise_soft_dtw(queries: Tensor, gallery: Tensor, gamma: float, band: int | None = None) -> Tensor:
    """Soft-DTW (Q, G) between every query (Q, N, F) and gallery clip (G, M, F), cosine cost on
    L2-normalised frames; forward only.

    Queries are taken in chunks: per chunk one matrix multiply gives the frame products laid out
    (N, q, M, G) (gallery clips contiguous, as the kernels want them), then the DP runs on tiles of
    gallery clips. Memory stays at one chunk, never Q x G x N x M.
    """
    if queries.dim() != 3 or gallery.dim() != 3 or queries.shape[2] != gallery.shape[2]:
        raise FgarError(
            f"pairwise_soft_dtw: need queries (Q, N, F) and gallery (G, M, F), got "
            f"{tuple(queries.shape)} and {tuple(gallery.shape)}"
        )
    gamma = _check_gamma(gamma, "pairwise_soft_dtw")
    (Q, N, F), (G, M, _) = queries.shape, gallery.shape
    band_value = _check_band(band, abs(N - M), "pairwise_soft_dtw")
    dtype = queries.dtype if queries.dtype in (torch.float32, torch.float64) else torch.float32
    device = queries.device
    out = torch.empty(Q, G, dtype=dtype, device=device)
    if Q == 0 or G == 0:
        return out.to(queries.dtype)
    unit_gallery = unit_frames(gallery.to(device, dtype))
    gallery_matrix = unit_gallery.permute(2, 1, 0).reshape(F, M * G)  # (F, (j, g))
    chunk_bytes = _CUDA_CHUNK_BYTES if device.type == "cuda" else _CPU_CHUNK_BYTES
    chunk = max(1, chunk_bytes // (N * M * G * unit_gallery.element_size()))
    scale = _scale(gamma, dtype)
    for start in range(0, Q, chunk):
        block = unit_frames(queries[start : start + chunk].to(dtype))
        q = block.shape[0]
        dots = (block.permute(1, 0, 2).reshape(N * q, F) @ gallery_matrix).view(N, q, M, G)
        values = out[start : start + q]
        if device.type == "cuda":
            _cuda_gallery(dots, scale, band_value, values)
        else:
            _cpu_kernels().gallery_forward(dots.numpy(), scale, band_value, values.numpy())
    return out.to(queries.dtype)


def _cuda_gallery(dots: Tensor, scale, band: int, values: Tensor) -> None:
    _, kernels = _cuda_kernels(dots.dtype)
    N, q, M, G = dots.shape
    row = torch.empty(M + 1, q * G, dtype=dots.dtype, device=dots.device)
    threads = 128
    _launch(kernels.gallery_forward, -(-(q * G) // threads), threads, dots.device, dots, scale, band, row, values)


class SoftDTW(nn.Module):
    """Soft-DTW between frame sequences x (B, N, F) and y (B, M, F) with cosine cost, values (B,).

    `normalize=True` gives the soft-DTW divergence D(x, y) - (D(x, x) + D(y, y)) / 2 (Blondel et al.
    2021): 0 for x == y, and non-negative for this cost (exp(-C / gamma) is a positive definite kernel).
    """

    def __init__(self, gamma: float, band: int | None = None, normalize: bool = False) -> None:
        super().__init__()
        self.gamma, self.band, self.normalize = gamma, band, normalize

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if not self.normalize:
            return soft_dtw(cosine_cost(x, y), self.gamma, self.band)
        B = x.shape[0]
        if x.shape[1] == y.shape[1]:  # one kernel launch for the three terms
            costs = torch.cat([cosine_cost(x, y), cosine_cost(x, x), cosine_cost(y, y)])
            d_xy, d_xx, d_yy = soft_dtw(costs, self.gamma, self.band).split(B)
        else:
            d_xy = soft_dtw(cosine_cost(x, y), self.gamma, self.band)
            d_xx = soft_dtw(cosine_cost(x, x), self.gamma, self.band)
            d_yy = soft_dtw(cosine_cost(y, y), self.gamma, self.band)
        return d_xy - (d_xx + d_yy) / 2

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, band={self.band}, normalize={self.normalize}"
