"""Simulation-based calibration: NUTS on a strongly correlated 2-d Gaussian posterior passes; SVI
with a mean-field guide on the same problem (posterior sd about 0.3 of the truth, so the true
value lands in the tails of the draws: U-shaped ranks) is flagged.

Each test states its alpha; seeds are fixed, so the outcome is deterministic.
"""

import numpy as np
import pytest

import calibration_models as cm
from bayesinf import check
from bayesinf.errors import InputError

ALPHA = 0.01  # level of each parameter's chi-square test (Bonferroni over parameters for `ok`)
MEAN_FIELD = dict(guide="normal", num_steps=3000, check_every=500, draws=1000)


@pytest.fixture(scope="module")
def design():
    return cm.collinear_design(20, 0.95, 0)  # posterior correlation of b about -0.95


def test_sbc_nuts_passes(design):
    result = check.sbc(cm.correlated, design, n_simulations=50, method="nuts", alpha=ALPHA, seed=0)
    assert result.ranks["b"].shape == (50, 2)
    assert result.ranks["b"].min() >= 0 and result.ranks["b"].max() <= 99
    assert all(t.p_value >= ALPHA for t in result.tests.values()), result.to_pandas()
    assert result.ok, result
    assert result.info["divergences"].sum() == 0


def test_sbc_flags_mean_field_svi(design):
    # negative control of the test above: the broken inference must fail it
    result = check.sbc(cm.correlated, design, n_simulations=50, method="svi", fit_kwargs=MEAN_FIELD,
                       alpha=ALPHA, seed=0)
    assert not result.ok
    assert set(result.flagged) == {"b[0]", "b[1]"}
    ranks = result.ranks["b"]
    tails = ((ranks < 10) | (ranks >= 90)).mean()  # 20% of ranks expected in the tails if uniform
    assert tails > 0.5, tails
    assert "NON-UNIFORM" in repr(result)


@pytest.mark.slow
def test_sbc_nuts_and_mean_field_many_simulations(design):
    good = check.sbc(cm.correlated, design, n_simulations=300, method="nuts", alpha=ALPHA, seed=1)
    assert good.ok, good.to_pandas()
    mvn = check.sbc(cm.correlated, design, n_simulations=300, method="svi", alpha=ALPHA, seed=1,
                    fit_kwargs=dict(MEAN_FIELD, guide="mvn"))
    assert mvn.ok, mvn.to_pandas()  # a full-rank Gaussian guide is exact here
    bad = check.sbc(cm.correlated, design, n_simulations=300, method="svi", fit_kwargs=MEAN_FIELD,
                    alpha=ALPHA, seed=1)
    assert not bad.ok and all(t.p_value < 1e-6 for t in bad.tests.values())


def test_ecdf_band_holds_uniform_ranks():
    # the simultaneous band contains the ECDF difference of uniform ranks with probability 1 - alpha
    band = check._ecdf_band(50, 100, 0.05, seed=3)
    rng = np.random.default_rng(4)
    expected = np.arange(1, 101) / 100
    inside = [np.abs(np.cumsum(np.bincount(rng.integers(0, 100, 50), minlength=100)) / 50 - expected).max() <= band
              for _ in range(2000)]
    se = np.sqrt(0.05 * 0.95 / 2000)
    assert abs(np.mean(inside) - 0.95) <= 3 * se + 0.01  # + the band's own Monte Carlo error


@pytest.mark.parametrize("kwargs, field", [
    (dict(method="vi"), "method"),
    (dict(n_simulations=1), "n_simulations"),
    (dict(params=["c"]), "params"),
    (dict(observed={"y": "nope"}), "observed"),
    (dict(fit_kwargs={"seed": 3}), "fit_kwargs"),
])
def test_bad_arguments(design, kwargs, field):
    with pytest.raises(InputError) as info:
        check.sbc(cm.correlated, design, **kwargs)
    assert info.value.field == field
