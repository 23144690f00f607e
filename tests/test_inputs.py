"""Bad input to ``fit`` and ``predict`` raises ``InputError`` naming the argument (or column) at
fault; lists, pandas and JAX arrays are accepted and give the same numbers as numpy."""

from contextlib import contextmanager

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
import pytest

import bayesinf as bi
import models
from conftest import TINY_SVI


@contextmanager
def input_error(field, *fragments):
    """Expect an ``InputError`` for ``field`` whose message names it and contains ``fragments``."""
    with pytest.raises(bi.InputError) as info:
        yield info
    assert info.value.field == field
    message = str(info.value)
    assert f"'{field}'" in message, message
    for fragment in fragments:
        assert fragment in message, message


def with_value(a, index, value):
    a = np.array(a, dtype=np.float64)
    a[index] = value
    return a


# ----------------------------------------------------------------------------- fit
@pytest.mark.parametrize("value, word", [(np.nan, "NaN"), (np.inf, "infinite"), (-np.inf, "infinite")])
def test_fit_non_finite_X(small_data, value, word):
    X = with_value(small_data["X"], (4, 1), value)
    with input_error("X", word, "row 4", "column 1"):
        bi.fit(models.linreg, X, small_data["y"], **TINY_SVI)


def test_fit_nan_y(small_data):
    y = with_value(small_data["y"], 7, np.nan)
    with input_error("y", "NaN", "row 7"):
        bi.fit(models.linreg, small_data["X"], y, **TINY_SVI)


def test_fit_nan_in_dataframe_names_column(small_data):
    X = pd.DataFrame(with_value(small_data["X"], (2, 1), np.nan), columns=["a", "b"])
    with input_error("X", "NaN", "row 2", "column 'b'"):
        bi.fit(models.linreg, X, small_data["y"], **TINY_SVI)


@pytest.mark.parametrize("make", [
    lambda X: X.astype(str),
    lambda X: X.astype(object),
    lambda X: [["a", "b"]] * len(X),
], ids=["str", "object", "list-of-str"])
def test_fit_non_numeric_X(small_data, make):
    with input_error("X", "non-numeric dtype"):
        bi.fit(models.linreg, make(small_data["X"]), small_data["y"], **TINY_SVI)


@pytest.mark.parametrize("column", [
    ["low", "high"] * 30,
    pd.Categorical(["low", "high"] * 30),
], ids=["str", "category"])
def test_fit_dataframe_string_column_names_column(small_data, column):
    X = pd.DataFrame({"a": small_data["X"][:, 0], "floor": column})
    with input_error("X['floor']", "non-numeric dtype"):
        bi.fit(models.linreg, X, small_data["y"], **TINY_SVI)


def test_fit_empty(small_data):
    with input_error("X", "empty"):
        bi.fit(models.linreg, np.empty((0, 2)), np.empty(0), **TINY_SVI)


def test_fit_ragged_list(small_data):
    with input_error("X", "cannot be converted"):
        bi.fit(models.linreg, [[1.0, 2.0], [3.0]], [1.0, 2.0], **TINY_SVI)


def test_fit_mismatched_lengths():
    rng = np.random.default_rng(0)
    with input_error("y", "99", "100"):
        bi.fit(models.linreg, rng.normal(size=(100, 2)), rng.normal(size=99), **TINY_SVI)


def test_fit_mismatched_lengths_with_row_args():
    rng = np.random.default_rng(0)
    with input_error("y", "(99,)", "X (100, 2)"):
        bi.fit(models.linreg, rng.normal(size=(100, 2)), rng.normal(size=99), row_args=("X",), **TINY_SVI)


def test_fit_row_args_names_unknown_argument(small_data):
    with input_error("row_args", "Z"):
        bi.fit(models.linreg, small_data["X"], small_data["y"], row_args=("Z",), **TINY_SVI)


def test_fit_bad_method(small_data):
    with input_error("method", "'mcmc'"):
        bi.fit(models.linreg, small_data["X"], small_data["y"], method="mcmc")


@pytest.mark.parametrize("seed", ["0", 1.5, 1.0, True, None, -1, 2**32, 2**70])
def test_fit_bad_seed(small_data, seed):
    with input_error("seed", "int"):
        bi.fit(models.linreg, small_data["X"], small_data["y"], seed=seed, **TINY_SVI)


def test_fit_unknown_argument(small_data):
    with input_error("model arguments", "'z'"):
        bi.fit(models.linreg, small_data["X"], small_data["y"], z=1.0, **TINY_SVI)


def test_fit_accepts_lists_pandas_and_jax(small_data):
    X, y = small_data["X"], small_data["y"]
    reference = bi.fit(models.linreg, X, y, seed=3, **TINY_SVI)
    for X_in, y_in in [
        (X.tolist(), y.tolist()),
        (pd.DataFrame(X, columns=["a", "b"]), pd.Series(y, name="y")),
        (jnp.asarray(X, dtype=jnp.float32), jnp.asarray(y, dtype=jnp.float32)),
    ]:
        post = bi.fit(models.linreg, X_in, y_in, seed=3, **TINY_SVI)
        np.testing.assert_array_equal(post.data["X"], reference.data["X"])
        np.testing.assert_array_equal(post.draws["b"], reference.draws["b"])


# ----------------------------------------------------------------------------- predict
@pytest.mark.parametrize("value, word", [(np.nan, "NaN"), (np.inf, "infinite")])
def test_predict_non_finite(tiny_linreg, small_data, value, word):
    X = with_value(small_data["X"][:5], (3, 0), value)
    with input_error("X", word, "row 3", "column 0"):
        tiny_linreg.predict(X)
    with input_error("X", word):
        tiny_linreg.predict(jnp.asarray(X))


def test_predict_wrong_number_of_columns(tiny_linreg):
    with input_error("X", "(4, 3)", "(rows, 2)"):
        tiny_linreg.predict(np.ones((4, 3)))
    with input_error("X", "(4, 2, 1)"):
        tiny_linreg.predict(np.ones((4, 2, 1)))


@pytest.mark.parametrize("value", [
    np.array([["1.0", "2.0"]]),
    np.array([[1.0, None]], dtype=object),
    np.ones((2, 2), dtype=complex),
], ids=["str", "object", "complex"])
def test_predict_wrong_dtype(tiny_linreg, value):
    with input_error("X"):
        tiny_linreg.predict(value)


def test_predict_dataframe_string_column_names_column(tiny_frame, small_data):
    X = pd.DataFrame({"a": small_data["X"][:3, 0], "b": ["x", "y", "z"]})
    with input_error("X['b']", "non-numeric"):
        tiny_frame.predict(X)


def test_predict_empty(tiny_linreg):
    with input_error("X", "empty"):
        tiny_linreg.predict(np.empty((0, 2)))
    with input_error("X", "empty"):
        tiny_linreg.predict([])


def test_predict_row_arguments_of_different_lengths(tiny_grouped, small_data):
    with input_error("g", "4 rows", "'X' has 5"):
        tiny_grouped.predict(small_data["X"][:5], small_data["g"][:4])


def test_predict_missing_row_argument(tiny_grouped, small_data):
    with input_error("g", "missing"):
        tiny_grouped.predict(small_data["X"][:5])
    with input_error("X", "missing"):
        tiny_grouped.predict(g=small_data["g"][:5])


def test_predict_dataframe_columns(tiny_frame, small_data):
    X = pd.DataFrame(small_data["X"][:6], columns=["a", "b"])
    with input_error("X", "missing column(s) ['b']"):
        tiny_frame.predict(X[["a"]])
    with input_error("X", "unexpected column(s) ['c']"):
        tiny_frame.predict(X.assign(c=1.0))
    # Columns are matched by name, not position.
    ordered = tiny_frame.predict(X, seed=4)
    swapped = tiny_frame.predict(X[["b", "a"]], seed=4)
    np.testing.assert_array_equal(swapped.draws, ordered.draws)


@pytest.mark.parametrize("value", [3, -1, 100])
def test_predict_unseen_category(tiny_grouped, small_data, value):
    g = np.array([0, 1, value, 2])
    with input_error("g", f"value {value} at row 2", "[0, 2]", "unseen"):
        tiny_grouped.predict(small_data["X"][:4], g)


def test_predict_non_integer_category(tiny_grouped, small_data):
    with input_error("g", "non-integer"):
        tiny_grouped.predict(small_data["X"][:3], np.array([0.0, 1.5, 2.0]))
    # Integral floats are accepted as the same categories.
    as_int = tiny_grouped.predict(small_data["X"][:3], np.array([0, 1, 2]), seed=1)
    as_float = tiny_grouped.predict(small_data["X"][:3], np.array([0.0, 1.0, 2.0]), seed=1)
    np.testing.assert_array_equal(as_float.draws, as_int.draws)


def test_predict_observed_argument(tiny_linreg, small_data):
    with input_error("y", "observed"):
        tiny_linreg.predict(small_data["X"][:3], y=small_data["y"][:3])
    with input_error("y", "observed"):
        tiny_linreg.predict(small_data["X"][:3], small_data["y"][:3])
    # y=None is what predict does anyway
    tiny_linreg.predict(small_data["X"][:3], y=None)


def test_predict_unknown_argument(tiny_linreg, small_data):
    with input_error("z", "not an argument"):
        tiny_linreg.predict(small_data["X"][:3], z=np.ones(3))


def test_predict_too_many_positional_arguments(tiny_linreg, small_data):
    with input_error("model arguments", "too many positional"):
        tiny_linreg.predict(small_data["X"][:3], None, 1.0, 2.0, 3.0)


def test_predict_static_argument_changed(linreg_nuts, tiny_linreg, linreg_problem, small_data):
    # sigma was given at fit (1.5): another value is refused, the same value accepted.
    x = linreg_problem.X[:2]
    with input_error("sigma", "differs", "1.5"):
        linreg_nuts.predict(x, sigma=2.0)
    # sigma was not given at fit: the model used its default, 1.0.
    with input_error("sigma", "not given at fit", "1.0"):
        tiny_linreg.predict(small_data["X"][:3], sigma=2.0)
    np.testing.assert_array_equal(tiny_linreg.predict(small_data["X"][:3], sigma=1.0, seed=2).draws,
                                  tiny_linreg.predict(small_data["X"][:3], seed=2).draws)


@pytest.mark.parametrize("levels", [1.5, 0.0, 1.0, -0.1, float("nan"), (0.5, 1.5), "0.9", (), None])
def test_predict_bad_levels(tiny_linreg, small_data, levels):
    with input_error("levels"):
        tiny_linreg.predict(small_data["X"][:3], levels=levels)


def test_predict_levels_accepts_numpy(tiny_linreg, small_data):
    pred = tiny_linreg.predict(small_data["X"][:3], levels=np.float32(0.8))
    assert pred.levels == (pytest.approx(0.8),)
    pred = tiny_linreg.predict(small_data["X"][:3], levels=np.array([0.9, 0.5]))
    assert pred.levels == (0.5, 0.9)


@pytest.mark.parametrize("kind", ["ETI", "hpd", "", None])
def test_predict_bad_kind(tiny_linreg, small_data, kind):
    with input_error("kind", "('eti', 'hdi')"):
        tiny_linreg.predict(small_data["X"][:3], kind=kind)


@pytest.mark.parametrize("seed", ["1", 1.0, True, None])
def test_predict_bad_seed(tiny_linreg, small_data, seed):
    with input_error("seed", "int"):
        tiny_linreg.predict(small_data["X"][:3], seed=seed)


def test_interval_and_summary_validate_levels(tiny_linreg, small_data):
    pred = tiny_linreg.predict(small_data["X"][:3])
    with input_error("level", "1.5"):  # errors name the argument: interval(level), summary(level)
        pred.interval(1.5)
    with input_error("kind", "'x'"):
        pred.interval(0.5, kind="x")
    with input_error("site", "'nope'"):
        pred["nope"]
    with input_error("level", "1.5"):
        tiny_linreg.summary(level=1.5)
    with input_error("kind"):
        tiny_linreg.summary(kind="x")
    with input_error("var_names", "['nope']"):
        tiny_linreg.summary(var_names=["b", "nope"])
    assert tiny_linreg.summary(var_names="b").equals(tiny_linreg.summary(var_names=["b"]))  # one name as a str
    assert len(tiny_linreg.summary(var_names="b")) == small_data["X"].shape[1]


def test_predict_accepts_lists_pandas_jax_and_single_rows(tiny_linreg, tiny_grouped, small_data):
    X = small_data["X"][:4]
    reference = tiny_linreg.predict(X, seed=5)
    for value in (X.tolist(), pd.DataFrame(X), jnp.asarray(X, dtype=jnp.float32), X.astype(np.float32)):
        np.testing.assert_array_equal(tiny_linreg.predict(value, seed=5).draws, reference.draws)
    # integer and boolean features are cast to the fit's float dtype
    ints = tiny_linreg.predict(np.ones((2, 2), dtype=np.int64), seed=5)
    np.testing.assert_array_equal(ints.draws, tiny_linreg.predict(np.ones((2, 2)), seed=5).draws)
    # a single row without its row axis is one row
    one = tiny_linreg.predict(X[0])
    assert one.mean.shape == (1,)
    # integer categories as a pandas Series
    g = small_data["g"][:4]
    np.testing.assert_array_equal(tiny_grouped.predict(pd.DataFrame(X), pd.Series(g), seed=6).draws,
                                  tiny_grouped.predict(X, g, seed=6).draws)
    # pandas' nullable dtypes are numbers when nothing is missing, an error naming the column if not
    nullable = pd.DataFrame({"a": pd.array(X[:, 0], dtype="Float64"), "b": pd.array(X[:, 1], dtype="Float64")})
    np.testing.assert_array_equal(tiny_grouped.predict(nullable, pd.Series(g, dtype="Int64"), seed=6).draws,
                                  tiny_grouped.predict(X, g, seed=6).draws)
    with input_error("X['b']", "1 missing values (first at row 2)"):
        tiny_grouped.predict(nullable.assign(b=pd.array([0.1, 0.2, None, 0.4], dtype="Float64")), g)


def test_values_too_large_for_float32_are_refused(small_data):
    X, y = small_data["X"], small_data["y"]
    big = X.copy()
    big[3, 1] = 1e300
    with input_error("X", "too large for float32"):
        bi.fit(models.linreg, big, y, **TINY_SVI)
    post = bi.fit(models.linreg, X, y, **TINY_SVI)
    with input_error("X", "too large for float32"):
        post.predict(np.array([[1e300, 0.0]]))


def _discrete_latent(X, y=None):
    z = numpyro.sample("z", dist.Bernoulli(0.5))
    numpyro.sample("y", dist.Normal(z * X[:, 0], 1.0), obs=y)


def test_discrete_latent_site_is_refused_with_advice(small_data):
    with input_error("model", "discrete latent site 'z'", "Marginalize"):
        bi.fit(_discrete_latent, small_data["X"], small_data["y"], **TINY_SVI)
