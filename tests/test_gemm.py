"""Both sgemm paths against NumPy, every transpose combination and awkward sizes."""

import numpy as np
import pytest

import rmtl
from rmtl import _core


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (3, 5, 7), (70, 300, 260), (257, 65, 513), (4, 9, 0)])
def test_gemm_matches_numpy(gemm, ta, tb, M, N, K):
    rng = np.random.default_rng(M * 7 + N * 3 + K)
    a = rng.normal(size=(K, M) if ta else (M, K)).astype(np.float32)
    b = rng.normal(size=(N, K) if tb else (K, N)).astype(np.float32)
    c = rng.normal(size=(M, N)).astype(np.float32)
    expect = 0.5 * (a.T if ta else a).astype(np.float64) @ (b.T if tb else b) + 2.0 * c
    _core.gemm(a, b, c, ta, tb, 0.5, 2.0)
    np.testing.assert_allclose(c, expect, rtol=1e-4, atol=1e-4 * max(1, np.sqrt(K)))


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize(
    "M,N,K",
    [
        (2048, 512, 896),
        (512, 896, 2048),
        (2048, 64, 112),
        (64, 2048, 2048),
        (1203, 4096, 16),
        (3000, 200, 400),
        (130, 4000, 40),
    ],
)
def test_blas_split_gives_the_bits_of_one_call(ta, tb, M, N, K):
    """large products are cut into blocks of rows or columns fixed by the shape, each one BLAS
    call on one thread: the bits must not depend on the thread count"""
    info = rmtl.blas_info()
    if info["backend"] != "blas" or not info["blas_per_thread"]:
        pytest.skip("products are split only on a BLAS with a per-thread thread count (OpenBLAS)")
    rng = np.random.default_rng(M + N + K)
    a = rng.normal(size=(K, M) if ta else (M, K)).astype(np.float32)
    b = rng.normal(size=(N, K) if tb else (K, N)).astype(np.float32)
    c0 = rng.normal(size=(M, N)).astype(np.float32)
    before = rmtl.get_num_threads()
    got = []
    try:
        for threads in (1, 2, 3, 5):
            rmtl.set_num_threads(threads)
            c = c0.copy()
            _core.gemm(a, b, c, ta, tb, 1.0, 1.0)
            got.append(c)
    finally:
        rmtl.set_num_threads(before)
    for threads, c in zip((2, 3, 5), got[1:]):
        assert np.array_equal(c, got[0]), threads


# products run together: a first layer's per-field products and gradients, mixed sizes
MANY = [
    (False, True, 1121, 1024, 128),
    (True, False, 1024, 128, 1121),
    (False, False, 1121, 128, 1024),
    (False, True, 598, 1024, 128),
    (False, True, 3, 1024, 128),
    (True, False, 256, 512, 2048),
    (False, False, 2048, 512, 256),
    (False, False, 5, 7, 3),
    (False, False, 4, 9, 0),
    (False, True, 0, 6, 5),
]


def many_products(seed):
    rng = np.random.default_rng(seed)
    out = []
    for ta, tb, M, N, K in MANY:
        a = rng.normal(size=(K, M) if ta else (M, K)).astype(np.float32)
        b = rng.normal(size=(N, K) if tb else (K, N)).astype(np.float32)
        c = rng.normal(size=(M, N)).astype(np.float32)
        out.append((a, b, c, ta, tb, 0.5, 1.0 if M % 2 else 0.0))
    return out


def test_gemm_many_matches_numpy(gemm):
    products = many_products(0)
    expect = [
        alpha * (a.T if ta else a).astype(np.float64) @ (b.T if tb else b) + beta * c
        for a, b, c, ta, tb, alpha, beta in products
    ]
    _core.gemm_many(products)
    for (a, _b, c, *_), e in zip(products, expect):
        np.testing.assert_allclose(
            c, e, rtol=1e-4, atol=1e-4 * max(1, np.sqrt(a.size / max(1, c.shape[0])))
        )


def test_gemm_many_gives_the_same_bits_on_any_thread_count():
    """the products' parts are fixed by their shapes and the machine; threads only claim them"""
    before = rmtl.get_num_threads()
    got = []
    try:
        for threads in (1, 2, 3, 5):
            rmtl.set_num_threads(threads)
            products = many_products(1)
            _core.gemm_many(products)
            got.append([p[2] for p in products])
    finally:
        rmtl.set_num_threads(before)
    for threads, cs in zip((2, 3, 5), got[1:]):
        assert all(np.array_equal(c, c1) for c, c1 in zip(cs, got[0])), threads


def test_gemm_many_rejects_shared_outputs():
    a = np.ones((4, 3), np.float32)
    b = np.ones((3, 5), np.float32)
    c = np.zeros((4, 5), np.float32)
    with pytest.raises(ValueError, match=r"products\[1\].*products\[0\]"):
        _core.gemm_many([(a, b, c, False, False, 1.0, 0.0), (a, b, c, False, False, 1.0, 0.0)])
    with pytest.raises(ValueError, match=r"products\[1\].*products\[0\]"):
        _core.gemm_many(
            [
                (a, b, c, False, False, 1.0, 0.0),
                (c, b.T.copy(), np.zeros((4, 3), np.float32), False, False, 1.0, 0.0),
            ]
        )
    with pytest.raises(TypeError, match=r"products\[0\]: expected a tuple"):
        _core.gemm_many([[a, b, c, False, False, 1.0, 0.0]])
    with pytest.raises(ValueError, match="shapes"):
        _core.gemm_many([(a, a, c, False, False, 1.0, 0.0)])
    _core.gemm_many([])


def test_beta_zero_ignores_garbage(gemm):
    a = np.ones((2, 3), np.float32)
    b = np.ones((3, 2), np.float32)
    c = np.full((2, 2), np.nan, np.float32)
    _core.gemm(a, b, c, False, False, 1.0, 0.0)
    np.testing.assert_array_equal(c, 3.0)


def test_gemm_rejects_bad_arrays():
    a = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="shapes"):
        _core.gemm(a, a, np.zeros((2, 2), np.float32), False, False, 1.0, 0.0)
    with pytest.raises(TypeError, match="float32"):
        _core.gemm(
            a.astype(np.float64), a.T.copy(), np.zeros((2, 2), np.float32), False, False, 1.0, 0.0
        )
    ro = np.zeros((2, 2), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        _core.gemm(a, a.T.copy(), ro, False, False, 1.0, 0.0)
    with pytest.raises(ValueError, match="contiguous"):
        _core.gemm(
            a,
            np.ones((3, 4), np.float32)[:, ::2],
            np.zeros((2, 2), np.float32),
            False,
            False,
            1.0,
            0.0,
        )


def test_blas_info_and_switch():
    info = rmtl.blas_info()
    assert info["backend"] in ("blas", "builtin") and info["blas_available"]
    before = info["backend"]
    rmtl.set_gemm_backend("builtin")
    assert rmtl.blas_info()["backend"] == "builtin"
    rmtl.set_gemm_backend("blas")
    assert rmtl.blas_info()["backend"] == "blas"
    rmtl.set_gemm_backend(before)
    with pytest.raises(ValueError, match="'blas' or 'builtin'"):
        rmtl.set_gemm_backend("mkl")


def test_env_variable_forces_builtin(tmp_path):
    import os
    import subprocess
    import sys

    env = dict(os.environ, RMTL_BLAS="builtin")
    out = subprocess.run(
        [sys.executable, "-c", "import rmtl; print(rmtl.blas_info()['backend'])"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert out.stdout.strip() == "builtin"


def test_pool_size_takes_any_integer_up_to_the_maximum():
    """issue 33: set_num_threads(np.int64(2)) was refused while 4096 was taken and read back
    256; any integer 1..max_threads is taken as is, anything else names the range"""
    import numpy as np

    from rmtl import _core

    before = rmtl.get_num_threads()
    most = _core.max_threads
    try:
        for n in (np.int64(2), np.int32(1), 2, most):
            rmtl.set_num_threads(n)
            assert rmtl.get_num_threads() == int(n)
        for bad in (0, -1, most + 1, 4096, 10**30, True, 2.0, "2", None, np.float64(2)):
            with pytest.raises(ValueError, match=f"1..{most}"):
                rmtl.set_num_threads(bad)
            with pytest.raises(ValueError, match=f"1..{most}"):
                _core.set_num_threads(bad)
    finally:
        rmtl.set_num_threads(before)
