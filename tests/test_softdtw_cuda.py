"""The numba-cuda soft-DTW kernels: run under numba's CUDA simulator against the CPU kernels, and
compiled to PTX for sm_80 and sm_90 with no double precision in the float32 kernels; the torch glue of
fgar_cli.softdtw runs its kernels in the simulator too. A real GPU, where
there is one, runs the torch-level API against the CPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

SIMULATOR_SCRIPT = textwrap.dedent(
    """
    import math
    import numpy as np
    from fgar_cli.kernels import cpu, cuda as kc

    rng = np.random.default_rng(0)

    def check_training(lens, N, M, band, dtype):
        B = len(lens)
        lens = np.array(lens, dtype=np.int64)
        cost = rng.uniform(0, 2, (B, N, M)).astype(dtype)
        scale = dtype(math.log2(math.e) / 0.5)
        grad_out = rng.uniform(-1, 1, B).astype(dtype)
        want = np.empty(B, dtype)
        weights = np.empty((cpu.n_tiles(B), N + 1, M + 1, 3, cpu.LANES), dtype)
        cpu.forward_weights(cost, lens, scale, band, want, weights)
        want_grad = np.empty_like(cost)
        cpu.backward(weights, lens, band, grad_out, want_grad)

        k = kc.kernels_for(dtype)
        cuda_weights = np.zeros((B, kc.n_row_tiles(N), 3, M + kc.WARP - 1, kc.WARP), dtype)
        row_buf = np.zeros((B, M + 2), dtype)
        got, got_nograd = np.zeros(B, dtype), np.zeros(B, dtype)
        k.forward[B, kc.WARP](cost, lens, scale, band, True, cuda_weights, row_buf, got)
        k.forward[B, kc.WARP](cost, lens, scale, band, False, np.zeros((1,) * 5, dtype), row_buf, got_nograd)
        got_grad = np.zeros_like(cost)
        k.backward[B, kc.WARP](cuda_weights, lens, band, grad_out, row_buf, got_grad)
        np.testing.assert_allclose(got, want, rtol=1e-5)
        np.testing.assert_allclose(got_nograd, want, rtol=1e-5)
        np.testing.assert_allclose(got_grad, want_grad, rtol=1e-4, atol=1e-6)

    # one tile of rows with lengths; two and more tiles (N > 32) with a band; float64
    check_training([(5, 7), (3, 6), (1, 1)], 5, 7, -1, np.float32)
    check_training([(35, 33), (34, 32)], 35, 33, 3, np.float32)
    check_training([(66, 3)], 66, 3, -1, np.float32)
    check_training([(32, 32), (33, 31)], 33, 33, -1, np.float64)

    N, M, Q, G = 4, 5, 2, 33
    dots = rng.uniform(-1, 1, (N, Q, M, G)).astype(np.float32)
    scale = np.float32(math.log2(math.e) / 0.1)
    for band in (-1, 1):
        got = np.zeros((Q, G), np.float32)
        kc.kernels_for(np.float32).gallery_forward[3, 32](dots, scale, band, np.zeros((M + 1, Q * G), np.float32), got)
        cost = np.ascontiguousarray((1 - dots).transpose(1, 3, 0, 2).reshape(Q * G, N, M))
        want = np.empty(Q * G, np.float32)
        cpu.forward(cost, np.array([[N, M]] * (Q * G)), scale, band, want)
        np.testing.assert_allclose(got.reshape(-1), want, rtol=1e-5)

    # the torch glue of fgar_cli.softdtw (allocation, argument order), launching in the simulator
    import torch
    from fgar_cli import softdtw

    def simulated_launch(kernel, blocks, threads, device, *args):
        kernel[blocks, threads](*(a.numpy() if isinstance(a, torch.Tensor) else a for a in args))

    softdtw._launch = simulated_launch
    cost = torch.rand(3, 35, 30, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([[35, 30], [33, 29], [4, 2]])
    want = softdtw.soft_dtw(cost, 0.3, 6, lengths)
    (want_grad,) = torch.autograd.grad(want.sum(), cost)
    lens, _ = softdtw._lengths(cost, lengths)
    got, weights = softdtw._cuda_forward(cost.detach(), 0.3, 6, lens, True)
    got_grad = softdtw._cuda_backward(weights, lens, 6, torch.ones(3, dtype=torch.float64), cost.shape)
    torch.testing.assert_close(got, want.detach())
    torch.testing.assert_close(got_grad, want_grad)
    queries, clips = torch.randn(3, 5, 8), torch.randn(4, 6, 8)
    unit_q, unit_g = torch.nn.functional.normalize(queries, dim=-1), torch.nn.functional.normalize(clips, dim=-1)
    dots = torch.einsum("qif,gjf->iqjg", unit_q, unit_g).contiguous()
    values = torch.empty(3, 4)
    softdtw._cuda_gallery(dots, softdtw._scale(0.2, torch.float32), 2, values)
    torch.testing.assert_close(values, softdtw.pairwise_soft_dtw(queries, clips, 0.2, 2), rtol=1e-5, atol=1e-5)
    print("simulator ok")
    """
)


def test_cuda_kernels_match_cpu_under_the_simulator(tmp_path) -> None:
    script = tmp_path / "simulate.py"
    script.write_text(SIMULATOR_SCRIPT)
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}  # must be set before numba is imported
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "simulator ok" in result.stdout


def _compile_ptx_or_skip():
    try:
        from numba import cuda
        from numba.cuda.cudadrv.libs import open_libdevice
        from numba.cuda.cudadrv.nvvm import NVVM

        NVVM()
        open_libdevice()
    except Exception as error:  # any missing piece of the toolchain means: cannot test here
        pytest.skip(f"numba-cuda with NVVM is needed to compile PTX: {error}")
    return cuda


def _signatures(float_type):
    from numba import boolean, int64

    f = float_type
    return {
        "forward": (f[:, :, ::1], int64[:, ::1], f, int64, boolean, f[:, :, :, :, ::1], f[:, ::1], f[::1]),
        "backward": (f[:, :, :, :, ::1], int64[:, ::1], int64, f[::1], f[:, ::1], f[:, :, ::1]),
        "gallery_forward": (f[:, :, :, ::1], f, int64, f[:, ::1], f[:, ::1]),
    }


@pytest.mark.parametrize("cc", [(8, 0), (9, 0)])
def test_every_kernel_compiles_to_ptx_without_double_precision(cc) -> None:
    cuda = _compile_ptx_or_skip()
    from numba import float32, float64

    from fgar_cli.kernels import cuda as kc

    for name, signature in _signatures(float32).items():
        kernel = getattr(kc.kernels_for(np.float32), name)
        ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=cc)
        assert f".target sm_{cc[0]}{cc[1]}" in ptx
        assert re.search(r"\.f64\b", ptx) is None, f"{name} uses double precision for float32 input"
    # the check can see doubles: the float64 build of a kernel has them
    kernel = kc.kernels_for(np.float64).gallery_forward
    ptx, _ = cuda.compile_ptx(kernel.py_func, _signatures(float64)["gallery_forward"], cc=cc)
    assert re.search(r"\.f64\b", ptx)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_tensors_match_cpu() -> None:
    from fgar_cli.softdtw import SoftDTW, pairwise_soft_dtw, soft_dtw

    torch.manual_seed(0)
    cost = torch.rand(40, 37, 35, requires_grad=True)
    lengths = torch.randint(30, 36, (40, 2))
    cost_gpu = cost.detach().cuda().requires_grad_()
    for band in (None, 6):
        want = soft_dtw(cost, 0.1, band, lengths)
        got = soft_dtw(cost_gpu, 0.1, band, lengths)
        (want_grad,) = torch.autograd.grad(want.sum(), cost)
        (got_grad,) = torch.autograd.grad(got.sum(), cost_gpu)
        torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got_grad.cpu(), want_grad, rtol=1e-4, atol=1e-5)
    queries, gallery = torch.randn(7, 16, 32), torch.randn(45, 16, 32)
    torch.testing.assert_close(
        pairwise_soft_dtw(queries.cuda(), gallery.cuda(), 0.1).cpu(),
        pairwise_soft_dtw(queries, gallery, 0.1),
        rtol=1e-5,
        atol=1e-5,
    )
    x, y = torch.randn(4, 9, 8), torch.randn(4, 9, 8)
    module = SoftDTW(0.1, normalize=True)
    torch.testing.assert_close(module(x.cuda(), y.cuda()).cpu(), module(x, y), rtol=1e-5, atol=1e-5)
