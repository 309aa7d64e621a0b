"""Prediction with the first layers read from per-code tables equals the plain products."""

import numpy as np
import pytest
from test_models import CASES, FIELDS, batch, make


def scrambled(name, T, **kw):
    """A model whose parameters are all O(1) random, so every ReLU and gate has work to do."""
    model = make(name, T, seed=7, **kw)
    rng = np.random.default_rng(1)
    for _, v in model.named_parameters():
        v[...] = rng.normal(scale=0.4, size=v.shape)
    return model


def codes_and_dense(n, seed=0):
    sparse, dense, _ = batch(n=n, seed=seed)
    sparse[:3] = 0  # rows of code 0 only (field 0's is the padding row)
    dense[:, 0] += 1.5  # a dense feature well away from zero
    return sparse, dense


@pytest.mark.parametrize("name,T,kw", CASES)
def test_tables_equal_plain_products(gemm, name, T, kw):
    model = scrambled(name, T, **kw).train()
    sparse, dense = codes_and_dense(70)
    plain = model.predict(sparse, dense, batch_size=16, tables=False)
    np.testing.assert_allclose(
        model.predict(sparse, dense, batch_size=16, tables=True), plain, rtol=1e-5, atol=1e-6
    )
    assert model.training  # predict restores the mode


def test_tables_follow_weight_changes():
    model = scrambled("mmoe", 2)
    sparse, dense = codes_and_dense(40)
    model.predict(sparse, dense, tables=True)
    dict(model.named_parameters())["embedding.embedding.weight"][5:] *= -2.0
    np.testing.assert_allclose(
        model.predict(sparse, dense, tables=True),
        model.predict(sparse, dense, tables=False),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "embed_dim,n,uses_tables", [(32, 100, True), (32, 3, False), (8, 100, False)]
)
def test_size_rule(embed_dim, n, uses_tables):
    # per C call (batch_size * 8 rows): tables when sum(field_dims) * 4 <= rows * (fields + 1)
    # and embed_dim >= 16
    assert (sum(FIELDS) * 4 <= n * (len(FIELDS) + 1)) == (n == 100)
    model = scrambled("sharedbottom", 2, embed_dim=embed_dim)
    sparse, dense = codes_and_dense(n)
    chosen = model.predict(sparse, dense, batch_size=64, tables=uses_tables)
    np.testing.assert_array_equal(model.predict(sparse, dense, batch_size=64), chosen)


def test_tables_argument_is_checked():
    model = make("esmm")
    sparse, dense, _ = batch(n=4)
    out = np.empty((4, 2), np.float32)
    with pytest.raises(ValueError, match="tables: expected 0"):
        model._core.predict(sparse, dense, out, 4, 3)
    with pytest.raises(TypeError, match="tables: expected None, True or False"):
        model.predict(sparse, dense, tables="no")
