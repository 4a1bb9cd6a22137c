"""soft-DTW on the CPU: values and gradients against tslearn (an independent implementation),
gradcheck, padded batches, bands, the gallery path and the module."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tslearn.metrics import SoftDTW as TslearnSoftDTW

from fgar_cli import softdtw
from fgar_cli.errors import FgarError
from fgar_cli.softdtw import SoftDTW, batch_cosine_cost, cosine_cost, pairwise_soft_dtw, soft_dtw

OUTSIDE_BAND = 1e10  # tslearn has no band: a huge cost keeps its paths out of the band's complement


def tslearn_value_grad(cost: np.ndarray, gamma: float, band: int | None) -> tuple[float, np.ndarray]:
    cost = cost.astype(np.float64).copy()
    if band is not None:
        i, j = np.indices(cost.shape)
        cost[np.abs(i - j) > band] = OUTSIDE_BAND
    oracle = TslearnSoftDTW(cost, gamma=gamma)
    return oracle.compute(), oracle.grad()


def hard_dtw(cost: np.ndarray) -> float:
    n, m = cost.shape
    R = np.full((n + 1, m + 1), np.inf)
    R[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            R[i, j] = cost[i - 1, j - 1] + min(R[i - 1, j - 1], R[i - 1, j], R[i, j - 1])
    return R[n, m]


@pytest.mark.parametrize("gamma", [1e-3, 0.1, 1.0, 10.0])
@pytest.mark.parametrize(
    ("n", "m", "band"), [(5, 7, None), (8, 8, 2), (7, 4, 3), (1, 1, None), (1, 5, None), (6, 1, 5), (33, 30, 4)]
)
def test_values_and_gradients_match_tslearn(gamma: float, n: int, m: int, band: int | None) -> None:
    rng = np.random.default_rng(n * 100 + m)
    cost = rng.uniform(0.0, 2.0, size=(3, n, m))
    x = torch.tensor(cost, requires_grad=True)
    values = soft_dtw(x, gamma, band)
    weights = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)  # distinct upstream gradients
    (values * weights).sum().backward()
    for b in range(3):
        expected_value, expected_grad = tslearn_value_grad(cost[b], gamma, band)
        assert values[b].item() == pytest.approx(expected_value, rel=1e-10, abs=1e-10)
        np.testing.assert_allclose(x.grad[b].numpy(), weights[b].item() * expected_grad, rtol=1e-8, atol=1e-10)


def test_padded_batch_uses_each_pairs_lengths_and_ignores_padding() -> None:
    rng = np.random.default_rng(1)
    shapes = [(9, 9), (4, 7), (9, 2), (1, 1), (6, 9)]
    cost = np.full((len(shapes), 9, 9), np.nan)  # padding must never be read into a result
    for b, (n, m) in enumerate(shapes):
        cost[b, :n, :m] = rng.uniform(0.0, 2.0, size=(n, m))
    x = torch.tensor(cost, requires_grad=True)
    lengths = torch.tensor(shapes)
    values = soft_dtw(x, 0.3, band=7, lengths=lengths)
    values.sum().backward()
    for b, (n, m) in enumerate(shapes):
        expected_value, expected_grad = tslearn_value_grad(cost[b, :n, :m], 0.3, 7)
        assert values[b].item() == pytest.approx(expected_value, rel=1e-10)
        np.testing.assert_allclose(x.grad[b, :n, :m].numpy(), expected_grad, rtol=1e-8, atol=1e-12)
        assert not x.grad[b, n:, :].any() and not x.grad[b, :, m:].any()


def test_gradcheck_float64_with_band_and_lengths() -> None:
    cost = torch.rand(4, 6, 5, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([[6, 5], [3, 4], [5, 5], [2, 1]])
    assert torch.autograd.gradcheck(lambda c: soft_dtw(c, 0.4, band=2, lengths=lengths), (cost,))
    assert torch.autograd.gradcheck(lambda c: soft_dtw(c, 2.0), (cost,))


def test_float32_kernels_agree_with_float64() -> None:
    """The float32 path uses polynomial exp2/log2 and 32-bit arithmetic throughout."""
    torch.manual_seed(0)
    cost64 = torch.rand(70, 20, 17, dtype=torch.float64) * 2  # 70 pairs: two full tiles and a partial one
    cost32 = cost64.float().requires_grad_()
    cost64.requires_grad_()
    for gamma in (0.01, 0.1, 1.0):
        v32, v64 = soft_dtw(cost32, gamma, band=5), soft_dtw(cost64, gamma, band=5)
        g32, g64 = torch.autograd.grad(v32.sum(), cost32)[0], torch.autograd.grad(v64.sum(), cost64)[0]
        assert v32.dtype == torch.float32 and g32.dtype == torch.float32
        torch.testing.assert_close(v32.double(), v64, rtol=2e-6, atol=1e-6)
        torch.testing.assert_close(g32.double(), g64, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tiny_gamma_is_finite_and_approaches_hard_dtw(dtype: torch.dtype) -> None:
    rng = np.random.default_rng(3)
    cost = rng.uniform(0.0, 2.0, size=(40, 12, 15))
    x = torch.tensor(cost, dtype=dtype, requires_grad=True)
    gamma = 1e-5
    values = soft_dtw(x, gamma)
    values.sum().backward()
    assert torch.isfinite(values).all() and torch.isfinite(x.grad).all()
    for b in range(40):
        # soft-min <= min, and min - soft-min <= gamma log 3 per cell of a path (at most n + m - 1)
        hard = hard_dtw(cost[b])
        assert hard - 26 * gamma * math.log(3) - 1e-5 * hard <= values[b].item() <= hard + 1e-5 * hard
        # the gradient of a near-hard DTW is the 0/1 indicator of the optimal path
        grad = x.grad[b].double().numpy()
        assert ((grad < 1e-3) | (grad > 1 - 1e-3)).all()
        assert (grad * cost[b]).sum() == pytest.approx(hard, rel=1e-4)


def test_band_narrower_than_length_gap_is_a_clear_error() -> None:
    with pytest.raises(FgarError, match=r"band 2 is narrower than \|N - M\| = 3"):
        soft_dtw(torch.rand(2, 5, 8), 0.1, band=2)
    with pytest.raises(FgarError, match=r"band 1 is narrower than \|N - M\| = 2"):
        soft_dtw(torch.rand(2, 5, 5), 0.1, band=1, lengths=torch.tensor([[5, 5], [2, 4]]))
    with pytest.raises(FgarError, match="band"):
        pairwise_soft_dtw(torch.rand(2, 4, 3), torch.rand(2, 7, 3), 0.1, band=1)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: soft_dtw(torch.rand(2, 3, 3), 0.0), "gamma must be a positive number"),
        (lambda: soft_dtw(torch.rand(2, 3, 3), float("nan")), "gamma must be a positive number"),
        (lambda: soft_dtw(torch.rand(3, 3), 0.1), r"cost must have shape \(B, N, M\)"),
        (lambda: soft_dtw(torch.rand(2, 3, 3), 0.1, band=-1), "band must be >= 0"),
        (lambda: soft_dtw(torch.rand(2, 3, 3), 0.1, lengths=torch.tensor([[3, 4], [1, 1]])), "lengths must lie"),
        (lambda: soft_dtw(torch.rand(2, 3, 3), 0.1, lengths=torch.tensor([3, 3])), "lengths must have shape"),
        (lambda: pairwise_soft_dtw(torch.rand(2, 4, 3), torch.rand(2, 4, 5), 0.1), "need queries"),
    ],
)
def test_invalid_arguments_raise_one_line_errors(call, message: str) -> None:
    with pytest.raises(FgarError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_cosine_cost_is_one_minus_cosine_and_differentiable() -> None:
    x = torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 3, 6, dtype=torch.float64)
    cost = cosine_cost(x, y)
    expected = 1 - torch.nn.functional.cosine_similarity(x[:, :, None, :], y[:, None, :, :], dim=-1)
    torch.testing.assert_close(cost, expected)
    assert torch.autograd.gradcheck(lambda a: cosine_cost(a, y), (x,))


def reference_soft_dtw_torch(cost: torch.Tensor, gamma: float) -> torch.Tensor:
    """Plain autograd soft-DTW of one (N, M) cost, the textbook recursion with logsumexp."""
    n, m = cost.shape
    inf = torch.tensor(float("inf"), dtype=cost.dtype)
    R = [[inf] * (m + 1) for _ in range(n + 1)]
    R[0][0] = torch.tensor(0.0, dtype=cost.dtype)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            prev = torch.stack([R[i - 1][j - 1], R[i - 1][j], R[i][j - 1]])
            R[i][j] = cost[i - 1, j - 1] - gamma * torch.logsumexp(-prev / gamma, dim=0)
    return R[n][m]


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("m", [5, 7])
def test_module_values_and_embedding_gradients(normalize: bool, m: int) -> None:
    torch.manual_seed(1)
    x = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, m, 4, dtype=torch.float64, requires_grad=True)
    module = SoftDTW(gamma=0.2, normalize=normalize)
    values = module(x, y)
    grads = torch.autograd.grad(values.sum(), (x, y))

    def reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        unit_a, unit_b = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1)
        return reference_soft_dtw_torch(1 - unit_a @ unit_b.T, 0.2)

    expected = []
    for b in range(3):
        d = reference(x[b], y[b])
        if normalize:
            d = d - (reference(x[b], x[b]) + reference(y[b], y[b])) / 2
        expected.append(d)
    expected = torch.stack(expected)
    torch.testing.assert_close(values, expected)
    for got, want in zip(grads, torch.autograd.grad(expected.sum(), (x, y)), strict=True):
        torch.testing.assert_close(got, want)
    if normalize:
        assert module(x, x).abs().max().item() < 1e-12  # the divergence of a sequence to itself


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("band", [None, 2])
def test_pairwise_matches_soft_dtw_on_every_pair(dtype: torch.dtype, band: int | None, monkeypatch) -> None:
    # a tiny chunk size forces several chunks; 37 gallery clips leave a partial tile of lanes
    monkeypatch.setattr(softdtw, "_CPU_CHUNK_BYTES", 1)
    torch.manual_seed(2)
    queries, gallery = torch.randn(5, 6, 8, dtype=dtype), torch.randn(37, 7, 8, dtype=dtype) * 3
    got = pairwise_soft_dtw(queries, gallery, 0.1, band)
    assert got.shape == (5, 37) and got.dtype == dtype
    x = queries[:, None].expand(5, 37, 6, 8).reshape(-1, 6, 8)
    y = gallery[None].expand(5, 37, 7, 8).reshape(-1, 7, 8)
    expected = soft_dtw(cosine_cost(x, y), 0.1, band).reshape(5, 37)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol)


def test_batch_cosine_cost_equals_the_pairwise_cost_and_its_gradient():
    torch.manual_seed(4)
    x = torch.randn(5, 6, 8, dtype=torch.float64, requires_grad=True)
    x.data[1, 2] = 0.0  # a zero frame counts as cos = 0, as in cosine_cost
    rows, cols = torch.triu_indices(5, 5)
    weights = torch.randn(len(rows), 6, 6, dtype=torch.float64)
    batch = batch_cosine_cost(x, rows, cols)
    pairs = cosine_cost(x[rows], x[cols])
    torch.testing.assert_close(batch, pairs)
    (g_batch,) = torch.autograd.grad((batch * weights).sum(), x)
    (g_pairs,) = torch.autograd.grad((pairs * weights).sum(), x)
    torch.testing.assert_close(g_batch, g_pairs)
    smooth = torch.randn(5, 6, 8, dtype=torch.float64, requires_grad=True)  # no zero frame: a kink there
    assert torch.autograd.gradcheck(lambda y: (batch_cosine_cost(y, rows, cols) * weights).sum(), (smooth,))
