"""The fast paths of issue 22 against the computations they replaced, kept here as slow references:
the whitener's batched inverse Cholesky factor against LAPACK's (potrf + trsm), the whitened
methods against the cosine methods on features whitened with LAPACK's factor, and the probe's
reflector-based row space against the explicit orthonormal basis of numpy's reduced QR."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from calm.classifiers import HeadWhitener, LogisticProbe, TunedLogisticProbe
from calm.classifiers._cosine import FeatureBlocks
from calm.classifiers.probe import concatenated_unit_heads
from calm.classifiers.whitening import inverse_cholesky
from calm.methods import get as method


def spd(batch: int, n: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Shrunk covariances with unit mean diagonal, as the whitener factors them."""
    gen = torch.Generator().manual_seed(seed)
    R = torch.randn(batch, 3 * n, n, generator=gen, dtype=torch.float64) @ torch.randn(batch, n, n, generator=gen,
                                                                                        dtype=torch.float64)
    S = R.mT @ R
    S = S / torch.diagonal(S, dim1=-2, dim2=-1).mean(-1).view(-1, 1, 1)
    return (0.95 * S + 0.05 * torch.eye(n, dtype=torch.float64)).to(dtype)


def lapack_factor(A: torch.Tensor) -> torch.Tensor:
    """What the whitener computed before: L^{-1} by LAPACK's Cholesky and a triangular solve."""
    L = torch.linalg.cholesky(A)
    return torch.linalg.solve_triangular(L, torch.eye(A.shape[-1], dtype=A.dtype).expand_as(L), upper=False)


@pytest.mark.parametrize("n", [1, 2, 5, 13, 64])
def test_inverse_cholesky_equals_lapack(n):
    A = spd(7, n, torch.float64)
    out = torch.full_like(A, float("nan"))
    singular = inverse_cholesky(A, out)
    assert not singular.any()
    np.testing.assert_allclose(out.numpy(), lapack_factor(A).numpy(), rtol=0, atol=1e-10)
    assert torch.equal(torch.triu(out, 1), torch.zeros_like(out))  # exactly lower-triangular
    A32 = A.to(torch.float32)
    out32 = torch.empty_like(A32)
    inverse_cholesky(A32, out32)
    scale = lapack_factor(A).abs().amax().item()
    np.testing.assert_allclose(out32.numpy(), lapack_factor(A).numpy(), rtol=0, atol=2e-5 * scale)


def test_inverse_cholesky_of_the_identity_is_exact_and_singular_heads_are_named():
    eye = torch.eye(6, dtype=torch.float32).expand(3, 6, 6).contiguous()
    out = torch.empty_like(eye)
    assert not inverse_cholesky(eye, out).any()
    assert torch.equal(out, eye)
    A = spd(4, 6, torch.float64)
    v = torch.randn(6, 3, dtype=torch.float64)
    A[1] = v @ v.T / (v.square().sum() / 6)  # rank 3 of 6
    A[3, 0, 0] = -1.0  # not positive definite
    assert inverse_cholesky(A, torch.empty_like(A)).tolist() == [False, True, False, True]


def synthetic(classes: int, shots: int, queries: int, heads: int, dim: int, seed: int = 0):
    """float16 features where a few (head, class) pairs carry a class direction, as in benchmarks/classifiers.py."""
    rng = np.random.default_rng(seed)
    offset = rng.normal(size=(heads, dim))
    directions = rng.normal(size=(classes, heads, dim)) * (rng.random((classes, heads, 1)) < 0.3)
    mix = rng.normal(size=(heads, dim, dim)) / np.sqrt(dim)

    def draw(labels):
        noise = np.einsum("nkd,kde->nke", rng.normal(size=(len(labels), heads, dim)), mix)
        return (offset + directions[labels] + 1.5 * noise).astype(np.float16)

    y = np.repeat(np.arange(classes), shots)
    yq = np.arange(queries) % classes
    return draw(y), y, draw(yq), yq


def lapack_whitened(whitener: HeadWhitener, X: np.ndarray) -> np.ndarray:
    """X whitened as before: each head normalised, times LAPACK's L^{-1} of the whitener's S_lambda / t."""
    q = torch.from_numpy(X.astype(np.float32))
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    matrix = torch.from_numpy(whitener.matrix_)
    factor = lapack_factor(torch.linalg.inv(matrix.double().mT @ matrix.double())).to(torch.float32)
    factor[torch.from_numpy(whitener.constant_heads_)] = 0.0
    return torch.einsum("nkd,ked->nke", q, factor).numpy()


@pytest.mark.parametrize("name", ["auto", "sav-white", "calm-white", "calm-tuned-white"])
def test_whitened_methods_equal_the_cosine_methods_on_lapack_whitened_features(name):
    X, y, Xq, _ = synthetic(classes=6, shots=5, queries=40, heads=24, dim=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        white = method(name).make().fit(X, y)
        whitener = HeadWhitener().fit(X, y)
        plain = method(name).make(geometry="cosine").fit(lapack_whitened(whitener, X), y)
    np.testing.assert_allclose(white.whiten_matrix_, whitener.matrix_, rtol=0, atol=0)
    np.testing.assert_array_equal(white.predict(Xq), plain.predict(lapack_whitened(whitener, Xq)))
    np.testing.assert_allclose(white.decision_function(Xq), plain.decision_function(lapack_whitened(whitener, Xq)),
                               rtol=0, atol=2e-5)


def test_whitener_factor_equals_lapack_at_size():
    X, y, _, _ = synthetic(classes=10, shots=5, queries=1, heads=16, dim=128)
    whitener = HeadWhitener().fit(X, y)
    matrix = torch.from_numpy(whitener.matrix_).double()
    shrunk = torch.linalg.inv(matrix.mT @ matrix)  # S_lambda / t, recovered in float64
    np.testing.assert_allclose(whitener.matrix_, lapack_factor(shrunk).numpy(), rtol=0, atol=1e-5)


def explicit_basis_probe(X: np.ndarray, y: np.ndarray, C: float):
    """The probe as fitted before: numpy's reduced QR of Z^T, coordinates Z Q, weights mapped back by Q^T."""
    from sklearn.linear_model import LogisticRegression

    Z = concatenated_unit_heads(FeatureBlocks(X)).astype(np.float64)
    Q, _ = np.linalg.qr(Z.T)
    model = LogisticRegression(C=C, max_iter=1000).fit(Z @ Q, y)
    return model.coef_ @ Q.T, model.intercept_


@pytest.mark.parametrize("duplicate", [False, True])
def test_probe_equals_the_explicit_basis_fit(duplicate):
    X, y, Xq, _ = synthetic(classes=5, shots=3, queries=30, heads=16, dim=32, seed=2)
    if duplicate:  # a repeated support row: R is singular, the reflectors still span the rows
        X[1] = X[0]
    coef, intercept = explicit_basis_probe(X, y, C=0.5)
    probe = LogisticProbe(C=0.5).fit(X, y)
    np.testing.assert_allclose(probe.coef_, coef, rtol=0, atol=1e-8)
    np.testing.assert_allclose(probe.intercept_, intercept, rtol=0, atol=1e-8)
    Zq = concatenated_unit_heads(FeatureBlocks(Xq)).astype(np.float64)
    np.testing.assert_array_equal(probe.predict(Xq), np.argmax(Zq @ coef.T + intercept, axis=1))


def test_tuned_probe_refit_equals_the_explicit_basis_fit():
    X, y, Xq, _ = synthetic(classes=4, shots=4, queries=20, heads=16, dim=32, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe = TunedLogisticProbe(Cs=(0.1, 10.0), folds=2).fit(X, y)
    coef, _ = explicit_basis_probe(X, y, C=probe.C_)
    np.testing.assert_allclose(probe.coef_, coef, rtol=0, atol=1e-8)

