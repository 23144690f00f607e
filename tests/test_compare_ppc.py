"""Posterior predictive checks into the DataTree, LOO-PIT and PSIS-LOO model comparison."""

import numpy as np
import pytest

import bayesinf as bi
import calibration_models as cm
from bayesinf import check
from bayesinf.calibration import uniformity_test
from bayesinf.errors import InputError

ALPHA = 0.01


@pytest.fixture(scope="module")
def hetero_fits():
    return {"homoscedastic": cm.fitted("normal_regression", "hetero"),
            "heteroscedastic": cm.fitted("hetero_regression", "hetero")}


def test_ppc_adds_posterior_predictive_group(hetero_fits):
    post = hetero_fits["homoscedastic"]
    tree = check.ppc(post, seed=1)
    assert {"posterior", "posterior_predictive", "observed_data", "log_likelihood"} <= set(tree.children)
    assert tree["posterior_predictive"]["y"].shape == (4, 500, 1000)
    np.testing.assert_array_equal(tree["posterior_predictive"]["y"].values,
                                  check.ppc(post, seed=1)["posterior_predictive"]["y"].values)


def test_compare_ranks_the_better_model_first(hetero_fits):
    table = check.compare(hetero_fits)
    assert list(table.index) == ["heteroscedastic", "homoscedastic"]
    assert {"elpd", "se", "weight", "elpd_diff", "dse", "pareto_k_max", "num_high_k"} <= set(table.columns)
    # the difference is many standard errors (dse), not noise
    assert table.loc["homoscedastic", "elpd_diff"] < -5 * table.loc["homoscedastic", "dse"]
    assert table.loc["heteroscedastic", "weight"] > 0.9
    assert table["num_high_k"].sum() == 0


def test_compare_warns_about_high_pareto_k():
    # 20 rows with one gross outlier: leaving it out moves the posterior a lot -> high k
    X, y = cm.linear_data(20, 5, "normal")
    y[0] = 60.0
    fits = {name: bi.fit(model, X, y, method="nuts", chains=4, draws=250, warmup=250, seed=7, progress=False,
                         warn=False) for name, model in (("a", cm.normal_regression), ("b", cm.hetero_regression))}
    with pytest.warns(check.ParetoKWarning, match="Pareto k"):
        table = check.compare(fits)
    assert (table["num_high_k"] > 0).any()


def test_loo_pit_uniform_for_right_model_not_for_wrong_one(hetero_fits):
    wrong = check.loo_pit(hetero_fits["homoscedastic"])
    assert wrong.shape == (1000,) and np.all((wrong >= 0) & (wrong <= 1))
    right = check.loo_pit(cm.fitted("normal_regression", "normal"))
    assert uniformity_test(right, alpha=ALPHA).is_uniform
    assert not uniformity_test(wrong, alpha=ALPHA).is_uniform  # negative control


def test_compare_input_errors(hetero_fits, tiny_linreg):
    with pytest.raises(InputError):
        check.compare({"only": hetero_fits["homoscedastic"]})
    with pytest.raises(InputError) as info:
        check.compare({"a": hetero_fits["homoscedastic"], "b": 3})
    assert info.value.field == "posteriors['b']"
    with pytest.raises(InputError, match="fit to different observations") as info:
        check.compare({"a": hetero_fits["homoscedastic"], "b": tiny_linreg})
    assert info.value.field == "posteriors"
