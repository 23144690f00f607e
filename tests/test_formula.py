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
from bayesinf.persistence import sha256_file

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


def test_text_in_a_numeric_column_names_the_column(fitted, frame):
    _, post = fitted
    with pytest.raises(bi.InputError, match="'x' is not numeric .*it was numeric at fit"):
        post.predict(frame.iloc[:3].assign(x=["a", "b", "c"]))


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


def test_integer_coded_groups_read_as_floats_keep_their_levels(frame):
    """pandas turns an int column into floats once it held a missing value (and CSV text may say
    "3.0"): level 3.0 is level 3, not a new group."""
    data = frame.assign(g=frame["g"].str[1:].astype(int))
    post = Model.from_formula("y ~ x + (1 | g)", data=data).fit(seed=0, **TINY_SVI)
    new = data[["x", "g"]].iloc[:10]
    expected = post.predict(new, new_groups="error", seed=1).mean
    for spelled in (new["g"].astype(float), new["g"].astype(float).astype(str), new["g"].astype(str)):
        np.testing.assert_array_equal(post.predict(new.assign(g=spelled), new_groups="error", seed=1).mean, expected)
    with pytest.raises(bi.InputError, match=r"'g' has level '\d\.5'"):
        post.predict(new.assign(g=new["g"] + 0.5), new_groups="error")


def test_each_unseen_level_gets_its_own_effect(fitted):
    """Two rows of one new level share its effect; two new levels get independent effects. With
    200 draws a correlation has standard error about 0.07: the same level's rows correlate at
    about 0.65 here (shared effect, independent noise), different levels' near 0.05 (before, all
    new levels shared one effect and correlated like rows of one level)."""
    m, post = fitted
    new = pd.DataFrame({"x": [1.0] * 3, "c": ["lo"] * 3, "g": ["n1", "n1", "n2"]})
    draws = post.predict(new, seed=3).draws
    same, other = np.corrcoef(draws[:, 0], draws[:, 1])[0, 1], np.corrcoef(draws[:, 0], draws[:, 2])[0, 1]
    assert same > other + 0.3 and abs(other) < 5 * 0.07
    # a level's id does not depend on the request: the same new level gets the same effect anywhere
    ids = m.model.arguments(new)["new_levels"][:, 0]
    assert ids[0] == ids[1] != ids[2] and ids.min() > 0
    assert m.model.arguments(new.iloc[::-1])["new_levels"][2, 0] == ids[0]
    np.testing.assert_array_equal(post.predict(new.iloc[2:], seed=3, row_offset=2).draws[:, 0], draws[:, 2])
    # designs saved before per-level effects keep their arguments (no new_levels)
    legacy = {k: v for k, v in m.model.design.to_json().items() if k != "per_level_new_effects"}
    assert "new_levels" not in type(m.model.design).from_json(legacy).arrays(new)


def test_new_level_effects_are_standard_normal_and_independent():
    """The hashed normals of ``_new_level_effects`` over 20,000 posterior draws: per level and
    coordinate mean 0 (sd 1/sqrt(20000) = 0.007) and variance 1 (sd sqrt(2/20000) = 0.01), KS
    p-value not tiny, levels and coordinates uncorrelated (sd 0.007), rows of one level equal and
    rows of seen levels untouched; 5 sd bounds."""
    import jax
    import jax.numpy as jnp
    from scipy import stats

    from bayesinf.formula.model import _new_level_effects

    z = jnp.asarray(np.random.default_rng(0).normal(size=(20_000, 2)), jnp.float32)
    ids = jnp.asarray([5, 6, 5, 0], jnp.int32)
    out = np.asarray(jax.vmap(lambda zn: _new_level_effects(jnp.full((4, 2), 7.0), ids, zn, lambda u: u))(z))
    for row in (0, 1):
        assert np.all(np.abs(out[:, row].mean(axis=0)) < 5 * 0.007)
        assert np.all(np.abs(out[:, row].var(axis=0) - 1) < 5 * 0.01)
        assert stats.kstest(out[:, row, 0], "norm").pvalue > 1e-4
    assert abs(np.corrcoef(out[:, 0, 0], out[:, 1, 0])[0, 1]) < 5 * 0.007  # two levels
    assert abs(np.corrcoef(out[:, 0, 0], out[:, 0, 1])[0, 1]) < 5 * 0.007  # two coordinates
    assert abs(np.corrcoef(out[:, 0, 0], np.asarray(z[:, 0]))[0, 1]) < 5 * 0.007  # the key's source
    np.testing.assert_array_equal(out[:, 0], out[:, 2])
    assert np.all(out[:, 3] == 7.0)


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
    # a dict of columns is a frame; a positional array is not the design, and the error says what is
    columns = {c: frame[c].iloc[:4].tolist() for c in ("x", "c", "g")}
    np.testing.assert_array_equal(post.predict(columns, seed=0).mean, post.predict(frame.iloc[:4], seed=0).mean)
    with pytest.raises(bi.InputError, match=r"'data' is a ndarray, not a pandas DataFrame.*'x'"):
        post.predict(frame[["x", "c", "g"]].iloc[:4].to_numpy())


# ----------------------------------------------------------------------------- no code from model files
@pytest.mark.parametrize("term", [
    "C(c)", "C(c, contr.treatment('mid'))", "C(c, contr.sum)", "C(c, Treatment(reference='hi'))",
    "C(c, levels=['mid', 'lo', 'hi'])", "x:C(c)", "x * C(c)", "scale(x)", "center(x)", "standardize(x)",
    "np.log(n + 1)", "log(n + 1)", "np.exp(x / 10)", "exp(x / 10)", "np.sqrt(n)", "log10(n + 1)", "I(x ** 2)",
    "I(x > 2)", "{x + 1}", "np.where(x > 0, x, 0)", "bs(x, df=4)", "cr(x, df=4)", "Q('x')",
])
def test_every_allowed_transform_works_and_survives_a_saved_design(frame, term):
    m = Model.from_formula(f"y ~ {term} + (1 + np.log(n + 1) | g)", data=frame)
    design = m.model.design
    # what bi.load reads back: the design as JSON, checked, then re-applied to the data
    loaded = type(design).from_json(json.loads(json.dumps(design.to_json())))
    np.testing.assert_allclose(loaded.fixed.matrix(frame), m.data["X"])
    np.testing.assert_allclose(loaded.groups[0].design.matrix(frame), m.data["Z"])


def _tamper(path, old: str, new: str) -> None:
    manifest = path / "manifest.json"
    text = manifest.read_text()
    assert old in text
    manifest.write_text(text.replace(old, new))


def test_code_edited_into_a_saved_formula_model_is_never_run(tmp_path, frame, fitted):
    marker = tmp_path / "PWNED"
    payload = f"0*__import__('os').system('touch {marker}')"
    post = Model.from_formula("y ~ np.log(np.exp(x))", data=frame).fit(seed=0, **{**TINY_SVI, "num_steps": 20})
    post.save(tmp_path / "fixed")
    # every occurrence of the term (formula, terms, columns, state), as an attacker would
    _tamper(tmp_path / "fixed", "np.log(np.exp(x))", f"np.log(np.exp(x + {payload}))")
    with pytest.raises(bi.ModelFileError, match="cannot rebuild the model.*is not allowed"):
        bi.load(tmp_path / "fixed")
    _, post = fitted
    post.save(tmp_path / "group")
    _tamper(tmp_path / "group", '"1 + x"', f'"1 + I(x + {payload})"')  # a group term's expression
    with pytest.raises(bi.ModelFileError, match="is not allowed"):
        bi.load(tmp_path / "group")
    store = bi.ModelStore(tmp_path / "store")
    version = store.save(post, name="m")
    model_dir = next(p.parent for p in (tmp_path / "store").rglob("manifest.json") if "model_spec" in p.read_text())
    digest = sha256_file(model_dir / "manifest.json")
    _tamper(model_dir, "scale(x)", f"scale(x + {payload})")
    with pytest.raises(bi.ModelFileError, match="checksum mismatch"):
        store.load("m", version=version)
    for meta in (tmp_path / "store").rglob("version.json"):  # an attacker can rewrite the store's digests too
        meta.write_text(meta.read_text().replace(digest, sha256_file(model_dir / "manifest.json")))
    with pytest.raises(bi.ModelFileError, match="is not allowed"):
        store.load("m", version=version)
    assert not marker.exists()


def test_code_in_a_formula_is_refused_before_anything_runs(tmp_path, frame):
    marker = tmp_path / "PWNED"
    with pytest.raises(bi.InputError, match="'formula' .* has term .*__import__.* is not allowed"):
        Model.from_formula(f"y ~ I(__import__('os').system('touch {marker}') * 0 + x)", data=frame)
    assert not marker.exists()


# ----------------------------------------------------------------------------- bad data and priors
def test_empty_data_is_refused_before_any_computation():
    with pytest.raises(bi.InputError, match="'data' has no rows"):
        Model.from_formula("y ~ x", data=pd.DataFrame({"y": [], "x": []}))


@pytest.mark.parametrize("formula, column", [("y ~ x", "x"), ("y ~ np.log(z) + (1 | g)", "z"),
                                             ("y ~ x + (1 + z | g)", "z"), ("y ~ x + (1 | g)", "g")])
def test_missing_predictor_values_name_column_and_row(formula, column):
    data = pd.DataFrame({"y": [1.0, 2.0, 3.0], "x": [1.0, 2.0, 3.0], "z": [1.0, 2.0, 3.0], "g": ["a", "b", "a"]})
    data.loc[1, column] = None
    with pytest.raises(bi.InputError, match=rf"'{column}' has 1 missing values \(first at row 1\)"):
        Model.from_formula(formula, data=data)


def test_transform_giving_nan_is_an_input_error():
    with pytest.raises(bi.InputError, match="'formula'"):
        Model.from_formula("y ~ np.log(x)", data=pd.DataFrame({"y": [1.0, 2.0, 3.0], "x": [1.0, -1.0, 2.0]}))
    post = Model.from_formula("y ~ np.log(x)", data=pd.DataFrame({"y": [1.0, 2.0, 3.0], "x": [1.0, 3.0, 2.0]})
                              ).fit(seed=0, **TINY_SVI)
    with pytest.raises(bi.InputError, match="'data' gives missing values through the formula's transforms"):
        post.predict(pd.DataFrame({"x": [2.0, -1.0]}))  # and no numpy warning (filterwarnings = error)


def test_nullable_pandas_dtypes_are_numbers(frame):
    plain = frame.iloc[:20]
    nullable = plain.astype({"x": "Float64", "k": "Int64", "y": "Float64", "b": "boolean", "g": "string"})
    for formula, family in [("y ~ x + k + b + (1 | g)", "gaussian"), ("k ~ x", "poisson"), ("b ~ x", "bernoulli")]:
        a = Model.from_formula(formula, data=plain, family=family).data
        b = Model.from_formula(formula, data=nullable, family=family).data
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(np.asarray(a[key], dtype=float), np.asarray(b[key], dtype=float))
    with pytest.raises(bi.InputError, match=r"'k' has 1 missing values \(first at row 3\)"):
        Model.from_formula("y ~ x + k", data=nullable.assign(k=nullable["k"].mask(nullable.index == 3)))


@pytest.mark.parametrize("dist, params, message", [
    ("normal", dict(mu=0, sigma=-1), r"'sigma' of Prior\('normal'\) is -1. Expected numbers > 0"),
    ("normal", dict(mu=0, sigma=0.0), "'sigma'.*> 0"),
    ("student_t", dict(nu=-3, mu=0, sigma=1), "'nu'.*> 0"),
    ("laplace", dict(mu=0, b=-1), "'b'.*> 0"),
    ("halfnormal", dict(sigma=[1.0, -2.0]), "'sigma'.*> 0"),
    ("exponential", dict(rate=0), "'rate'.*> 0"),
    ("gamma", dict(alpha=2, beta=-0.1), "'beta'.*> 0"),
    ("inverse_gamma", dict(alpha=0, beta=1), "'alpha'.*> 0"),
    ("lkj", dict(eta=-1), "'eta'.*> 0"),
    ("uniform", dict(lower=1, upper=0), "'upper' of Prior\\('uniform'\\) is 0, not above lower=1"),
    ("normal", dict(mu=float("nan"), sigma=1), "'mu'.*finite numbers"),
    ("normal", dict(mu="zero", sigma=1), "'mu'.*a number or a sequence of numbers"),
])
def test_prior_parameters_are_checked(dist, params, message):
    with pytest.raises(bi.InputError, match=message):
        Prior(dist, **params)


def test_saved_prior_with_bad_parameter_is_a_model_file_error(tmp_path, fitted):
    _, post = fitted
    post.save(tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    manifest["model_spec"]["spec"]["priors"]["sigma"]["rate"] = -1.0
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(bi.ModelFileError, match="'rate' of Prior"):
        bi.load(tmp_path / "m")
