"""Posterior compression (``Posterior.compress``) and 16-bit draw storage (``save(draws_dtype=)``)."""

import json

import numpy as np
import pytest
from scipy import stats

import bayesinf as bi
from bayesinf.errors import InputError


@pytest.fixture(scope="module")
def held_out(linreg_problem):
    rng = np.random.default_rng(99)
    return rng.normal(size=(40, linreg_problem.X.shape[1]))


@pytest.mark.parametrize("method", ["herding", "thin", "random"])
def test_compressed_intervals_match_exact_predictive(linreg_nuts, linreg_problem, held_out, method):
    """Predictive 5%/50%/95% quantiles of a 500-draw posterior against the exact Gaussian ones.

    With n = 500 predictive draws (one per kept draw), a sample p-quantile has sd
    sqrt(p (1 - p) / n) / phi(z_p) predictive sds: 0.095 at p = 0.05/0.95 and 0.056 at the median.
    The kept draws' own error (posterior sd of the mean, ~0.1, is a fifteenth of the predictive sd
    1.5) adds little. The max over 40 rows x 3 quantiles stays within 5 of those sds (a two-sided
    5-sigma excursion has probability 6e-7 each); the mean absolute error, E|Z| = 0.8 sds on
    average over quantiles (0.8 x 0.082 = 0.066) plus 4 sds of a mean of 40 roughly independent
    rows (4 x 0.6 x 0.082 / sqrt(40) = 0.031), stays below 0.1.
    """
    small = linreg_nuts.compress(500, method=method, seed=0)
    pred = small.predict(held_out, levels=(0.9,), seed=11)
    mean, sd = linreg_problem.predictive(held_out)
    probs = np.array([0.05, 0.5, 0.95])
    exact = mean + sd * stats.norm.ppf(probs)[:, None]
    lower, upper = pred.interval(0.9)
    error = np.abs(np.stack([lower, pred.median, upper]) - exact) / sd
    mc_sd = np.sqrt(probs * (1 - probs) / 500) / stats.norm.pdf(stats.norm.ppf(probs))
    assert np.all(error <= 5 * mc_sd[:, None])
    assert error.mean() < 0.1


def test_herding_keeps_posterior_moments_closer_than_random(linreg_nuts):
    """The mean of a random subset of n of N draws errs by sd * sqrt((1 - n/N) / n) (0.097 sd for
    100 of 2000); herding, which minimizes the energy distance to all draws, must stay within a
    third of that for every coefficient, and its energy distance must be below thinning's and a
    random subset's (measured: a half to a third of theirs)."""
    full = linreg_nuts.flat_draws(["b"])["b"]
    n, total = 100, full.shape[0]
    kept = {m: linreg_nuts.compress(n, method=m, seed=0) for m in ("herding", "thin", "random")}
    herded = kept["herding"].flat_draws(["b"])["b"]
    random_sd = np.sqrt((1 - n / total) / n)

    def close(kept_b):
        return (np.all(np.abs(kept_b.mean(axis=0) - full.mean(axis=0)) / full.std(axis=0) < random_sd / 3)
                and np.all(np.abs(kept_b.std(axis=0) / full.std(axis=0) - 1) < 0.1))

    assert close(herded)
    # Negative control: draws evenly spread over the sorted b[0], shifted by 0.05 sd, must fail.
    assert not close(full[np.argsort(full[:, 0])[::20]][:n] + 0.05 * full.std(axis=0))
    distance = {m: p.info["compression"]["energy_distance"] for m, p in kept.items()}
    assert distance["herding"] < distance["thin"] and distance["herding"] < distance["random"]


def test_compressed_draws_are_draws_of_the_posterior(linreg_nuts):
    from bayesinf.compress import select_draws

    small = linreg_nuts.compress(250, method="herding")
    assert small.num_chains == 1 and small.num_draws == 250
    index, facts = select_draws(linreg_nuts, 250, "herding", 0)
    assert len(set(index.tolist())) == 250 and index.min() >= 0 and index.max() < 2000  # distinct draws
    full, kept = linreg_nuts.flat_draws(), small.flat_draws()
    for name in full:
        np.testing.assert_array_equal(kept[name], full[name][index])
    for name, values in linreg_nuts.sample_stats.items():  # statistics follow their draws
        np.testing.assert_array_equal(small.sample_stats[name].reshape(-1), values.reshape(-1)[index])
    info = small.info["compression"]
    assert info["method"] == "herding" and info["num_draws"] == 250 and info["from_draws"] == 2000
    assert info["energy_distance"] == facts["energy_distance"] > 0


def test_thin_keeps_chains_when_it_can(linreg_nuts):
    even = linreg_nuts.compress(500, method="thin")
    assert even.draws["b"].shape == (4, 125, 3)
    np.testing.assert_array_equal(even.draws["b"][1, 0], linreg_nuts.draws["b"][1, 2])  # midpoints of 4-draw runs
    odd = linreg_nuts.compress(250, method="thin")
    assert odd.draws["b"].shape == (1, 250, 3)


def test_compress_is_reproducible(linreg_nuts):
    for method in ("herding", "thin", "random"):
        a = linreg_nuts.compress(200, method=method, seed=3)
        b = linreg_nuts.compress(200, method=method, seed=3)
        np.testing.assert_array_equal(a.draws["b"], b.draws["b"])
    other = linreg_nuts.compress(200, method="random", seed=4)
    assert not np.array_equal(other.draws["b"], linreg_nuts.compress(200, method="random", seed=3).draws["b"])


def test_compressed_posterior_saves_loads_predicts_summarizes(linreg_nuts, held_out, tmp_path):
    small = linreg_nuts.compress(300, method="herding")
    small.save(tmp_path / "small")
    loaded = bi.load(tmp_path / "small")
    assert loaded.info["compression"] == small.info["compression"]
    np.testing.assert_array_equal(loaded.draws["b"], small.draws["b"])
    a, b = small.predict(held_out, seed=2), loaded.predict(held_out, seed=2)
    np.testing.assert_array_equal(a.draws, b.draws)
    table = loaded.summary()
    assert list(table.index) == ["b[0]", "b[1]", "b[2]"]
    np.testing.assert_allclose(table["mean"], small.draws["b"].reshape(-1, 3).mean(axis=0), atol=1e-6)


@pytest.mark.parametrize("kwargs, field", [
    ({"num_draws": 0}, "num_draws"), ({"num_draws": 2001}, "num_draws"), ({"num_draws": 2.5}, "num_draws"),
    ({"num_draws": True}, "num_draws"), ({"method": "support"}, "method"), ({"seed": -1}, "seed"),
])
def test_compress_rejects_bad_arguments(linreg_nuts, kwargs, field):
    with pytest.raises(InputError) as info:
        linreg_nuts.compress(**{"num_draws": 100, **kwargs})
    assert info.value.field == field


# ----------------------------------------------------------------------------- 16-bit storage
@pytest.mark.parametrize("draws_dtype, significand_bits", [("float16", 11), ("bfloat16", 8)])
def test_16_bit_draws_round_trip_within_rounding_bound(linreg_nuts, held_out, tmp_path, draws_dtype,
                                                       significand_bits):
    """Rounding to nearest with ``p`` significant bits moves a value by at most 2^-p of its size
    (plus half the spacing of subnormals, 2^-25 for float16, for values below 6.1e-5).
    With the same seed the predictive noise is the same, so each predictive draw of y = X b + noise
    moves by at most 2^-p * sum_i |x_i b_i|, and so does every quantile (a quantile moves no more
    than the draws under it); 1e-5 covers float32 sums."""
    path = tmp_path / draws_dtype
    linreg_nuts.save(path, draws_dtype=draws_dtype)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["draws_dtype"] == draws_dtype
    assert manifest["arrays"]["posterior/b"]["dtype"] == ("<f2" if draws_dtype == "float16" else "<u2")
    loaded = bi.load(path)
    full, low = linreg_nuts.draws["b"], loaded.draws["b"]
    assert low.dtype == np.float32
    rel = 2.0**-significand_bits
    assert np.all(np.abs(low - full) <= rel * np.abs(full) + 2.0**-25)
    assert not np.array_equal(low, full)
    a, b = linreg_nuts.predict(held_out, seed=4), loaded.predict(held_out, seed=4)
    per_draw = (rel * np.abs(linreg_nuts.flat_draws(["b"])["b"]) + 2.0**-25) @ np.abs(held_out).T + 1e-5  # (draws, rows)
    assert np.all(np.abs(a.draws - b.draws) <= per_draw)
    bound = per_draw.max(axis=0)
    for level in (0.5, 0.9):
        for x, y in zip(a.interval(level), b.interval(level)):
            assert np.all(np.abs(x - y) <= bound)


def test_16_bit_storage_rejects_what_it_cannot_hold(linreg_nuts, tmp_path):
    from bayesinf.posterior import Posterior

    huge = {k: v.copy() for k, v in linreg_nuts.draws.items()}
    huge["b"][0, 3, 1] = 1e6  # beyond float16's 65504
    post = Posterior(model=linreg_nuts.model, method="nuts", draws=huge, sample_stats=linreg_nuts.sample_stats,
                     schema=linreg_nuts.schema, data=linreg_nuts.data, sites=linreg_nuts.sites,
                     settings=linreg_nuts.settings, info=linreg_nuts.info, dtype=linreg_nuts.dtype,
                     seed=linreg_nuts.seed, model_path=linreg_nuts.model_path)
    with pytest.raises(InputError) as info:
        post.save(tmp_path / "a", draws_dtype="float16")
    assert info.value.field == "draws['b']" and "(0, 3, 1)" in str(info.value)
    post.save(tmp_path / "b", draws_dtype="bfloat16")  # float32's range
    assert bi.load(tmp_path / "b").draws["b"][0, 3, 1] == 1e6 - 1e6 % 4096  # 8 significant bits
    with pytest.raises(InputError) as info:
        linreg_nuts.save(tmp_path / "c", draws_dtype="int8")
    assert info.value.field == "draws_dtype"
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_compress_small_and_large_posteriors(tiny_linreg):
    """Fewer draws than one distance block (SVI, 200 draws), and more than ``MAX_REFERENCE``, where
    the energy distance is measured against a seeded subset of the draws."""
    from bayesinf.compress import MAX_REFERENCE
    from bayesinf.posterior import Posterior

    small = tiny_linreg.compress(20, method="herding")
    assert small.draws["b"].shape == (1, 20, 2) and small.info["compression"]["energy_distance"] > 0
    rng = np.random.default_rng(0)
    many = {"b": rng.normal(size=(1, MAX_REFERENCE + 904, 2)).astype(np.float32)}
    big = Posterior(model=tiny_linreg.model, method="svi", draws=many, sample_stats={}, schema=tiny_linreg.schema,
                    data=tiny_linreg.data, sites=tiny_linreg.sites, settings=tiny_linreg.settings, info={},
                    dtype=tiny_linreg.dtype, seed=0, model_path=tiny_linreg.model_path)
    a, b = big.compress(100, seed=1), big.compress(100, seed=1)
    np.testing.assert_array_equal(a.draws["b"], b.draws["b"])
    # 100 herded points of a standard normal: means within a third of a random subset's error 1/sqrt(100).
    assert np.all(np.abs(a.draws["b"][0].mean(axis=0)) < 0.1 / 3)
