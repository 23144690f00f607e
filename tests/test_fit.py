"""fit(): drivers, compilation reuse, precision, seeds, diagnostics verdicts, ArviZ export."""

import subprocess
import sys
import warnings

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import bayesinf as bi
import models
from bayesinf.config import NUTSConfig
from bayesinf.inference.binding import BoundModel
from bayesinf.inference.nuts import _gradient_inverse_mass_matrix, chain_layout, run_nuts
from bayesinf.inference.svi import has_converged

SMALL_NUTS = dict(chains=2, draws=200, warmup=200, progress=False, warn=False)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 2))
    return X, X @ np.array([1.0, -1.0]) + rng.normal(size=60)


def test_chain_layout():
    assert chain_layout(4, 4) == (4, 1)
    assert chain_layout(4, 2) == (2, 2)
    assert chain_layout(4, 1) == (1, 4)
    assert chain_layout(3, 2) == (1, 3)  # 3 chains do not split evenly over 2 devices
    assert chain_layout(8, 4) == (4, 2)
    assert chain_layout(1, 4) == (1, 1)


def test_float32_by_default_float64_on_request(data):
    X, y = data
    post32 = bi.fit(models.linreg, X, y, **SMALL_NUTS)
    assert post32.draws["b"].dtype == np.float32
    post64 = bi.fit(models.linreg, X, y, dtype="float64", **SMALL_NUTS)
    assert post64.draws["b"].dtype == np.float64
    pred = post64.predict(X[:3])
    assert pred.mean.dtype == np.float64
    with pytest.raises(bi.InputError, match="dtype"):
        bi.fit(models.linreg, X, y, dtype="float16", **SMALL_NUTS)


def test_refit_reuses_the_compiled_sampler(data):
    X, y = data
    first = bi.fit(models.linreg, X, y, seed=1, **SMALL_NUTS)
    again = bi.fit(models.linreg, X, y + 0.5, seed=2, **SMALL_NUTS)  # new values, same shapes
    assert again.info["cached_sampler"]
    more_draws = bi.fit(models.linreg, X, y, seed=3, **{**SMALL_NUTS, "draws": 300})
    assert more_draws.info["cached_sampler"]  # draws are not compiled in
    assert more_draws.num_draws == 300
    other_warmup = bi.fit(models.linreg, X, y, seed=3, **{**SMALL_NUTS, "warmup": 300})
    assert not other_warmup.info["cached_sampler"]  # the adaptation schedule is
    assert first.num_chains == 2


def test_same_seed_same_draws_other_seed_other_draws(data):
    X, y = data
    a = bi.fit(models.linreg, X, y, seed=7, **SMALL_NUTS)
    b = bi.fit(models.linreg, X, y, seed=7, **SMALL_NUTS)
    c = bi.fit(models.linreg, X, y, seed=8, **SMALL_NUTS)
    np.testing.assert_array_equal(a.draws["b"], b.draws["b"])
    assert not np.array_equal(a.draws["b"], c.draws["b"])
    s1 = bi.fit(models.linreg, X, y, method="svi", num_steps=300, check_every=100, draws=100, seed=7, warn=False)
    s2 = bi.fit(models.linreg, X, y, method="svi", num_steps=300, check_every=100, draws=100, seed=7, warn=False)
    np.testing.assert_array_equal(s1.draws["b"], s2.draws["b"])
    np.testing.assert_array_equal(s1.losses, s2.losses)


def test_progress_bar_does_not_change_draws(data, capsys):
    X, y = data
    quiet = bi.fit(models.linreg, X, y, seed=4, **SMALL_NUTS)
    shown = bi.fit(models.linreg, X, y, seed=4, **{**SMALL_NUTS, "progress": True})
    np.testing.assert_array_equal(quiet.draws["b"], shown.draws["b"])
    assert "NUTS" in capsys.readouterr().err


def test_sample_stats_and_arviz_groups(data):
    X, y = data
    post = bi.fit(models.linreg, X, y, **SMALL_NUTS)
    for name in ("diverging", "energy", "lp", "acceptance_rate", "step_size", "tree_depth", "n_steps"):
        assert post.sample_stats[name].shape == (2, 200)
    tree = post.to_arviz()
    assert {"posterior", "sample_stats", "observed_data", "log_likelihood"} <= set(tree.children)
    assert tree["log_likelihood"]["y"].shape == (2, 200, 60)
    # pointwise log likelihood equals the Normal log density at the draws
    b = post.draws["b"][0, 0]
    expected = -0.5 * (y - X @ b) ** 2 - 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(np.asarray(tree["log_likelihood"]["y"])[0, 0], expected, rtol=1e-4, atol=1e-4)
    pp = post.to_arviz(log_likelihood=False, posterior_predictive=True)
    assert pp["posterior_predictive"]["y"].shape == (2, 200, 60)


def funnel(y=None):
    """Neal's funnel with a centered parameterization: NUTS diverges and mixes badly on it."""
    log_scale = numpyro.sample("log_scale", dist.Normal(0.0, 3.0))
    with numpyro.plate("units", 10):
        theta = numpyro.sample("theta", dist.Normal(0.0, jnp.exp(log_scale / 2)))
    numpyro.sample("y", dist.Normal(theta, 100.0), obs=y)


def test_diagnose_flags_a_bad_fit_and_passes_a_good_one(data):
    bad_kwargs = dict(chains=2, draws=100, warmup=50, progress=False, seed=0)
    with pytest.warns(bi.ConvergenceWarning) as record:
        bad = bi.fit(funnel, y=np.zeros(10), **bad_kwargs)
    verdict = bad.diagnose()
    assert not verdict.ok and str(verdict) in str(record[0].message)
    assert record[0].filename == __file__  # attributed to the caller's line, not to bayesinf's internals
    assert any("Effective sample size" in p for p in verdict.problems)
    X, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("error", bi.ConvergenceWarning)
        good = bi.fit(models.linreg, X, y, chains=4, draws=500, warmup=500, progress=False)
    assert good.diagnose().ok
    assert good.diagnose().checks["r_hat_max"] < 1.01


def test_svi_stopping_rule():
    rng = np.random.default_rng(0)
    flat = rng.normal(100.0, 1.0, size=(2, 1000))
    assert has_converged(flat[0], flat[1], rtol=0.0)  # no improvement beyond noise
    falling = np.linspace(200, 100, 2000).reshape(2, 1000) + rng.normal(0, 1, size=(2, 1000))
    assert not has_converged(falling[0], falling[1], rtol=1e-4)


def test_svi_keeps_its_loss_trace_and_verdict(data):
    X, y = data
    post = bi.fit(models.linreg, X, y, method="svi", guide="mvn", num_steps=20_000, learning_rate=0.01,
                  draws=500, progress=False)
    assert post.losses.shape == (post.info["num_steps"],)
    assert post.info["converged"] and post.info["num_steps"] < 20_000
    assert post.diagnose().ok
    assert post.draws["b"].shape == (1, 500, 2)
    stopped = bi.fit(models.linreg, X, y, method="svi", num_steps=200, check_every=100, draws=50, progress=False,
                     warn=False)
    assert not stopped.diagnose().ok  # still decreasing at the step limit


def test_import_is_light():
    code = "import sys, bayesinf; sys.exit(int(any(m in sys.modules for m in ('jax', 'numpyro', 'arviz'))))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_demo_command(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "bayesinf.cli", "demo", "--draws", "300", "--warmup", "300", "--out", str(out),
         "--no-progress"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "NUTS fit:" in result.stdout and "new" in result.stdout
    for name in ("trace.png", "rank.png", "ppc.png"):
        png = (out / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000


def badly_scaled(scales, y=None):
    """Independent Normal posteriors of scales ``scales`` (the prior is ~1e4 times wider)."""
    x = numpyro.sample("x", dist.Normal(0.0, 100.0).expand([scales.shape[0]]).to_event(1))
    numpyro.sample("y", dist.Normal(x, scales).to_event(1), obs=y)


def test_init_mass_matrix_setting_is_validated():
    assert NUTSConfig().init_mass_matrix == "identity"
    with pytest.raises(bi.InputError, match="init_mass_matrix"):
        NUTSConfig(init_mass_matrix="unit")


def test_gradient_inverse_mass_matrix_keeps_scales_and_shrinks_noise():
    log_var = np.log(np.geomspace(1e-3, 1e3, 8))  # inside the clipping range
    inverse = np.asarray(_gradient_inverse_mass_matrix({"x": jnp.exp(-log_var)}, False, jnp.float32))
    # spread var(log) = v > 1: the log deviations from the mean shrink by exactly 1 - 1/v
    v = log_var.var()
    np.testing.assert_allclose(np.log(inverse) - np.log(inverse).mean(), (1 - 1 / v) * (log_var - log_var.mean()),
                               rtol=1e-4, atol=1e-4)
    # a spread the noise of -log|d| (variance 1) explains is dropped: isotropic at the geometric mean
    noise = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([[4.0]])}
    flat = np.asarray(_gradient_inverse_mass_matrix(noise, False, jnp.float32))
    np.testing.assert_allclose(flat, np.full(3, 0.5), rtol=1e-5)
    # zero, huge and non-finite gradient components stay inside the clipping range
    odd = np.asarray(_gradient_inverse_mass_matrix({"x": jnp.array([0.0, 1e9, jnp.nan, 1.0])}, True, jnp.float32))
    assert odd.shape == (4, 4) and np.all(np.isfinite(odd))
    assert np.all(np.diag(odd) >= 1e-4) and np.all(np.diag(odd) <= 1e4)
    np.testing.assert_array_equal(odd, np.diag(np.diag(odd)))


def test_gradient_initial_mass_matrix_cuts_warmup_on_a_badly_scaled_target():
    scales = np.geomspace(1e-3, 1.0, 8).astype(np.float32)
    model = BoundModel(badly_scaled, {})
    arrays = {"scales": scales, "y": np.zeros(8, np.float32)}
    # Held fixed (no adaptation), the identity needs ~pi * max/min(scales) / 2 ~ 1,500 leapfrog steps
    # for a U-turn on the widest coordinate at a step stable on the narrowest, so most trees stop
    # at the depth limit: 2**8 - 1 = 255 steps. From the gradient, the log variances are off by the
    # noise -log|d|, |d| uniform on (0, 2) (the worst pair of 8 coordinates: sd ratio
    # ~sqrt(1.8 / 0.2) = 3), and by the shrinkage (range compressed by 1000**(2/21) ~ 1.4): a
    # condition number ~4, ~pi * 4 ~ 13 steps per U-turn, so median trees of depth <= 5 (<= 63 steps).
    fixed = NUTSConfig(chains=2, draws=100, warmup=100, max_tree_depth=8, adapt_mass_matrix=False)
    identity = run_nuts(model, arrays, fixed, seed=0)
    gradient = run_nuts(model, arrays, fixed.replace(init_mass_matrix="gradient"), seed=0)
    assert np.median(identity.stats["n_steps"]) == 255
    assert np.median(gradient.stats["n_steps"]) <= 63
    # Adapted as usual, both start from their initial matrix until the first mass matrix update
    # (iteration 100 of a 150-iteration warmup) and share the estimate after it: the first 100
    # iterations cost ~255 vs <= 63 steps as above, the last 50 about the same, ~(100 * 255 + 50 * 63)
    # / (150 * 63) ~ 3x fewer for the gradient start; a factor 2 leaves room for the first, shorter
    # trees while the chains move from their initial points to the posterior.
    config = NUTSConfig(chains=2, draws=200, warmup=150, max_tree_depth=8)
    identity = run_nuts(model, arrays, config, seed=0)
    gradient = run_nuts(model, arrays, config.replace(init_mass_matrix="gradient"), seed=0)
    again = run_nuts(model, arrays, config.replace(init_mass_matrix="gradient"), seed=0)
    assert not gradient.info["cached_sampler"] and again.info["cached_sampler"]  # the setting is compiled in
    np.testing.assert_array_equal(gradient.draws["x"], again.draws["x"])
    identity_steps = np.asarray(identity.info["warmup_leapfrog_steps"])
    gradient_steps = np.asarray(gradient.info["warmup_leapfrog_steps"])
    assert identity_steps.shape == (2,)
    assert 2 * gradient_steps.sum() < identity_steps.sum()
    assert gradient.stats["diverging"].sum() == 0
    # the draws still have the posterior's scales: an sd estimated from ESS >= 100 has relative
    # error 1 / sqrt(2 * 100) ~ 7%, so 0.3 is a > 4 sigma bound
    np.testing.assert_allclose(gradient.draws["x"].std(axis=(0, 1)) / scales, 1.0, atol=0.3)


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**31 - 1, 2**31, 2**32 - 1])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_host_key_data_is_jax_prng_key(seed, dtype):
    """The chains' keys are derived inside the compiled sampler from ``key_data(seed)``; it must be
    JAX's own ``PRNGKey(seed)`` in either precision, else seeds would mean other draws."""
    import jax

    from bayesinf.runtime import key_data
    from bayesinf.runtime import precision

    with precision(dtype):
        expected = np.asarray(jax.random.key_data(jax.random.PRNGKey(seed)))
    np.testing.assert_array_equal(key_data(seed), expected)


def _obs_computed_in_model(x, y=None):
    b = numpyro.sample("b", dist.Normal(0.0, 1.0))
    with numpyro.plate("rows", x.shape[0]):
        numpyro.sample("y", dist.Normal(b * x, 1.0), obs=None if y is None else jnp.asarray(y) * 1.0)


def test_model_traced_without_computation_and_with_it_when_needed():
    """Sites are read from an abstract trace; a model that computes its observed value falls back to
    the concrete trace and still finds which argument is observed."""
    from bayesinf.sites import abstract_trace, inspect_model

    X = np.linspace(-1, 1, 20).astype(np.float32)
    model = BoundModel(models.linreg, {"sigma": 1.0, "tau": 2.0})
    Xm = np.stack([X, -X], axis=1)
    arrays = {"X": Xm, "y": X.copy()}
    trace = abstract_trace(model, arrays)
    assert trace["y"]["value"] is arrays["y"]  # the observed array itself
    assert not isinstance(trace["b"]["value"], np.ndarray)  # abstract: shape only
    sites, _ = inspect_model(model, arrays)
    assert sites.observed_args == {"y": "y"} and sites.latent == ("b",)

    computed = BoundModel(_obs_computed_in_model, {})
    sites, trace = inspect_model(computed, {"x": X, "y": 2 * X + 1})
    assert sites.observed_args == {"y": "y"} and sites.latent == ("b",)
    assert np.shape(trace["b"]["value"]) == ()


def test_vectorized_chain_method_runs_every_chain_on_one_device(data):
    X, y = data
    post = bi.fit(models.linreg, X, y, chain_method="vectorized", seed=3, **SMALL_NUTS)
    assert post.info["devices"] == 1 and post.info["chains_per_device"] == SMALL_NUTS["chains"]
    assert post.settings["chain_method"] == "vectorized"
    assert post.diagnose().ok
    with pytest.raises(bi.InputError) as info:
        bi.fit(models.linreg, X, y, chain_method="pmap", **SMALL_NUTS)
    assert info.value.field == "chain_method"
