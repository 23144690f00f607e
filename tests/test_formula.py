"""Formula models: design reuse on new data, priors, families, bad inputs, save/load from spec.

Fits here are tiny SVI fits (they test plumbing, not posteriors); the statistical checks are in
``test_formula_posteriors.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import bayesinf as bi
from bayesinf.formula import FAMILIES, Model, Prior

TINY_SVI = dict(method="svi", num_steps=300, check_every=100, draws=200, warn=False, progress=False)


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(0)
    n = 120
    df = pd.DataFrame({
        "x": rng.normal(2.0, 3.0, size=n),
        "c": rng.choice(["lo", "mid", "hi"], size=n),
        "g": rng.choice([f"g{i}" for i in range(6)], size=n),
    })
    df["y"] = 1.0 + 0.5 * df["x"] + (df["c"] == "hi") + rng.normal(size=n)
    df["b"] = (rng.uniform(size=n) < 1 / (1 + np.exp(-(df["x"] - 2) / 3))).astype(int)
    df["k"] = rng.poisson(np.exp(0.2 + 0.1 * df["x"]))
    df["n"] = df["k"] + rng.integers(0, 5, size=n)
    return df


@pytest.fixture(scope="module")
def fitted(frame):
    m = Model.from_formula("y ~ scale(x) + C(c) + (1 + x | g)", data=frame)
    return m, m.fit(seed=0, **TINY_SVI)


# ----------------------------------------------------------------------------- design and priors
def test_design_reuses_fit_encodings(frame, fitted):
    m, _ = fitted
    fixed = m.model.design.fixed
    assert fixed.columns == ("Intercept", "scale(x)", "C(c)[T.lo]", "C(c)[T.mid]")
    new = pd.DataFrame({"x": [2.0, 5.0], "c": ["mid", "hi"], "g": ["g0", "g1"]})
    X = fixed.matrix(new)
    # scale() uses the fit data's mean and sd, not the new rows'
    expected = (new["x"] - frame["x"].mean()) / frame["x"].std(ddof=1)
    np.testing.assert_allclose(X[:, 1], expected)
    np.testing.assert_array_equal(X[:, 2:], [[0, 1], [0, 0]])


def test_default_priors_follow_the_documented_rule(frame, fitted):
    m, _ = fitted
    s_y = frame["y"].std(ddof=1)
    priors = m.priors
    assert list(priors) == ["Intercept", "scale(x)", "C(c)", "1|g_sigma", "x|g_sigma", "1+x|g_cor", "sigma"]
    assert priors["scale(x)"].dist == "normal"
    assert priors["scale(x)"].params == {"mu": 0.0, "sigma": pytest.approx(2.5 * s_y)}
    assert priors["Intercept"].params["mu"] == pytest.approx(frame["y"].mean())
    assert priors["x|g_sigma"].params["sigma"] == pytest.approx(2.5 * s_y / frame["x"].std(ddof=1))
    assert priors["sigma"].params == {"rate": pytest.approx(1 / s_y)}
    assert priors["1+x|g_cor"] == Prior("lkj", eta=1.0)
    logit = Model.from_formula("b ~ x", data=frame, family="bernoulli")
    assert logit.priors["x"].params["sigma"] == pytest.approx(2.5 / frame["x"].std(ddof=1))  # unit scale


def test_prior_override_and_unknown_name(frame):
    m = Model.from_formula("y ~ x + (1 | g)", data=frame, priors={"x": Prior("normal", mu=0.0, sigma=10.0)})
    assert m.priors["x"] == Prior("normal", mu=0.0, sigma=10.0)
    with pytest.raises(bi.InputError, match="'priors' names 'slope'"):
        Model.from_formula("y ~ x", data=frame, priors={"slope": Prior("normal", mu=0.0, sigma=1.0)})
    with pytest.raises(bi.InputError, match="'dist' of Prior"):
        Prior("normall", mu=0, sigma=1)


def test_prior_predictive(frame):
    m = Model.from_formula("y ~ x + (1 | g)", data=frame)
    draws = m.prior_predictive(num_draws=50, seed=1)
    assert draws["y"].shape == (50, len(frame)) and draws["x"].shape == (50,)
    assert draws["1|g"].shape == (50, 6)


@pytest.mark.parametrize("family, formula, check", [
    ("gaussian", "y ~ x", lambda d: np.isfinite(d).all()),
    ("student_t", "y ~ x", lambda d: np.isfinite(d).all()),
    ("bernoulli", "b ~ x", lambda d: set(np.unique(d)) <= {0, 1}),
    ("binomial", "k | trials(n) ~ x", None),
    ("poisson", "k ~ x + (1 | g)", lambda d: (d >= 0).all() and (d == np.round(d)).all()),
    ("negative_binomial", "k ~ x", lambda d: (d >= 0).all()),
    ("gamma", "n ~ x", None),
])
def test_every_family_simulates_its_support(frame, family, formula, check):
    data = frame.assign(n=frame["n"] + 1) if family == "gamma" else frame
    m = Model.from_formula(formula, data=data, family=family)
    draws = m.prior_predictive(num_draws=20, seed=0)[m.model.design.response]
    assert draws.shape == (20, len(frame))
    if family == "binomial":
        assert ((draws >= 0) & (draws <= frame["n"].to_numpy())).all()
    elif family == "gamma":  # float32 draws from a gamma with a small prior shape can underflow to 0
        assert (draws >= 0).all() and np.isfinite(draws).all()
    else:
        assert check(draws)


def test_link_override(frame):
    m = Model.from_formula("b ~ x", data=frame, family="bernoulli", link="probit")
    assert m.model.link == "probit"
    with pytest.raises(bi.InputError, match="'link' 'logit' is not available for family 'poisson'"):
        Model.from_formula("k ~ x", data=frame, family="poisson", link="logit")


# ----------------------------------------------------------------------------- bad inputs
def test_unknown_family(frame):
    with pytest.raises(bi.InputError, match="'family' 'gausian' is not a known family.*one of"):
        Model.from_formula("y ~ x", data=frame, family="gausian")


def test_malformed_formula(frame):
    with pytest.raises(bi.InputError, match="'formula'.*malformed"):
        Model.from_formula("y ~ x + (1 | g", data=frame)


def test_missing_column_at_fit_and_predict(frame, fitted):
    with pytest.raises(bi.InputError, match="'z' is missing from the data"):
        Model.from_formula("y ~ x + z", data=frame)
    with pytest.raises(bi.InputError, match="'h' is missing from the data"):
        Model.from_formula("y ~ x + (1 | h)", data=frame)
    _, post = fitted
    with pytest.raises(bi.InputError, match="'x' is missing from the data"):
        post.predict(pd.DataFrame({"c": ["lo"], "g": ["g0"]}))


def test_unseen_fixed_level_names_column_and_level(fitted):
    _, post = fitted
    with pytest.raises(bi.InputError, match="'c' has level 'extreme', which was not in the data at fit"):
        post.predict(pd.DataFrame({"x": [1.0], "c": ["extreme"], "g": ["g0"]}))


def test_non_numeric_response_for_gaussian(frame):
    with pytest.raises(bi.InputError, match="'c' is not numeric.*family 'gaussian' needs numbers"):
        Model.from_formula("c ~ x", data=frame)


def test_non_binary_response_for_bernoulli(frame):
    with pytest.raises(bi.InputError, match="'k' has value .*family 'bernoulli' needs a binary response"):
        Model.from_formula("k ~ x", data=frame, family="bernoulli")


def test_binomial_needs_trials(frame):
    with pytest.raises(bi.InputError, match="no trials for family 'binomial'"):
        Model.from_formula("k ~ x", data=frame, family="binomial")


def test_new_group_modes(fitted):
    _, post = fitted
    new = pd.DataFrame({"x": [1.0, 1.0], "c": ["lo", "lo"], "g": ["g0", "unseen"]})
    with pytest.raises(bi.InputError, match="'g' has level 'unseen', which was not in the data at fit"):
        post.predict(new, new_groups="error")
    with pytest.raises(bi.InputError, match="'new_groups' must be one of"):
        post.predict(new, new_groups="zero")
    sample = post.predict(new, new_groups="sample", seed=3)
    population = post.predict(new, new_groups="population", seed=3)
    # the fitted level is predicted alike; the new level is wider when its effect is drawn
    assert sample.mean[0] == pytest.approx(population.mean[0])
    assert sample.sd[1] > population.sd[1]


# ----------------------------------------------------------------------------- core integration
def test_save_and_load_from_spec_alone(tmp_path, fitted):
    _, post = fitted
    new = pd.DataFrame({"x": [0.0, 3.0], "c": ["hi", "lo"], "g": ["g2", "brand-new"]})
    before = post.predict(new, seed=5)
    post.save(tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["model_spec"]["builder"] == "bayesinf.formula.model:build_model"
    loaded = bi.load(tmp_path / "m")
    after = loaded.predict(new, seed=5)
    np.testing.assert_array_equal(before.mean, after.mean)
    np.testing.assert_array_equal(before.interval(0.9)[0], after.interval(0.9)[0])


def test_store_saves_and_serves_a_formula_model_by_spec(tmp_path, fitted):
    _, post = fitted
    store = bi.ModelStore(tmp_path / "store")
    version = store.save(post, name="formula")
    loaded = store.load("formula", version=version)
    new = pd.DataFrame({"x": [1.0], "c": ["mid"], "g": ["g1"]})
    np.testing.assert_array_equal(post.predict(new, seed=2).mean, loaded.predict(new, seed=2).mean)


def test_named_coordinates(fitted):
    m, post = fitted
    tree = post.to_arviz(log_likelihood=False)
    assert list(tree.posterior["1|g"].coords["g"].values) == [f"g{i}" for i in range(6)]
    assert list(tree.posterior["C(c)"].coords["C(c)_dim"].values) == ["C(c)[T.lo]", "C(c)[T.mid]"]
    assert list(tree.posterior["1+x|g_cor"].coords["1+x|g_pair"].values) == ["Intercept:x"]


def test_predict_accepts_raw_arrays_too(fitted, frame):
    m, post = fitted
    arrays = m.model.arguments(frame.iloc[:4])
    pred = post.predict(**arrays, seed=0)
    assert pred.mean.shape == (4,)
