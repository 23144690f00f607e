"""Exported predictors (``Posterior.export`` / ``bayesinf.export.load_predictor``): the same numbers
as ``Posterior.predict``, in a process without the model's code, any row count, checked files and
inputs."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bayesinf.errors import InputError, ModelFileError
from bayesinf.export import load_predictor


@pytest.fixture(scope="module")
def exported(tiny_grouped, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "grouped.predictor"
    tiny_grouped.export(path)
    return path


def _rows(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2)), rng.integers(0, 3, size=n)


def _assert_same(a, b):
    """Exact equality: the exported StableHLO is the jitted function's, compiled by the same XLA."""
    np.testing.assert_array_equal(a.draws, b.draws)
    for name in ("mean", "sd", "median"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for level in a.levels:
        for x, y in zip(a.interval(level), b.interval(level)):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("num_rows", [1, 37])
def test_exported_predict_equals_posterior_predict(tiny_grouped, exported, num_rows):
    X, g = _rows(num_rows)
    portable = load_predictor(exported)
    for seed, kind in ((0, "eti"), (5, "hdi")):
        expected = tiny_grouped.predict(X, g, levels=(0.5, 0.9), kind=kind, seed=seed)
        _assert_same(expected, portable.predict(X=X, g=g, levels=(0.5, 0.9), kind=kind, seed=seed))
    _assert_same(tiny_grouped.predict(X, g, seed=1), portable.predict(X, g, seed=1))  # positional inputs
    _assert_same(tiny_grouped.predict(X, g, seed=2, row_offset=21), portable.predict(X, g, seed=2, row_offset=21))


def test_manifest_describes_inputs_outputs_versions(exported):
    import jax

    manifest = json.loads((exported / "manifest.json").read_text())
    inputs = {i["name"]: i for i in manifest["inputs"]}
    assert inputs["X"]["shape"] == ["rows", 2] and inputs["g"]["shape"] == ["rows"]
    assert inputs["g"]["int_range"] == [0, 2]
    assert [o["name"] for o in manifest["outputs"]] == ["y"]
    assert manifest["versions"]["jax"] == jax.__version__
    assert set(manifest["files"]) == {"predict.jax", "draws.npz"}
    assert "cpu" in manifest["serialization"]["platforms"]
    assert isinstance(manifest["serialization"]["calling_convention_version"], int)


def test_any_row_count_compiles_once_per_bucket(exported):
    from bayesinf.predictive import bucket_size

    portable = load_predictor(exported)
    max_rows = portable.max_rows
    counts = [1, 2, 3, 5, 9, 16, 17, 31, 100]
    for n in counts:
        X, g = _rows(n, seed=n)
        pred = portable.predict(X=X, g=g, seed=n)
        assert pred.mean.shape == (n,)
    assert portable.compile_count() == len({bucket_size(n, max_rows) for n in counts})
    before = portable.compile_count()
    for n in (4, 6, 7, 12):  # new sizes in buckets already compiled
        portable.predict(*_rows(n), seed=0)
    assert portable.compile_count() == before


def test_loads_and_predicts_without_the_model_module(tiny_grouped, exported, tmp_path):
    X, g = _rows(23, seed=3)
    expected = tiny_grouped.predict(X, g, levels=(0.9,), seed=7)
    np.savez(tmp_path / "rows.npz", X=X, g=g)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["models"] = None  # the module defining the model cannot be imported
        import numpy as np
        from bayesinf.export import load_predictor
        rows = np.load({str(tmp_path / "rows.npz")!r})
        pred = load_predictor({str(exported)!r}).predict(X=rows["X"], g=rows["g"], levels=(0.9,), seed=7)
        lower, upper = pred.interval(0.9)
        np.savez({str(tmp_path / "out.npz")!r}, draws=pred.draws, mean=pred.mean, lower=lower, upper=upper)
        assert "numpyro" not in sys.modules, "the exported predictor imported NumPyro"
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")
    np.testing.assert_array_equal(out["draws"], expected.draws)
    np.testing.assert_array_equal(out["mean"], expected.mean)
    np.testing.assert_array_equal(out["lower"], expected.interval(0.9)[0])
    np.testing.assert_array_equal(out["upper"], expected.interval(0.9)[1])


def test_tampered_corrupt_and_foreign_files_rejected(tiny_grouped, exported, tmp_path):
    import shutil

    for name in ("predict.jax", "draws.npz"):
        copy = tmp_path / f"tampered-{name}"
        shutil.copytree(exported, copy)
        data = bytearray((copy / name).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (copy / name).write_bytes(bytes(data))
        with pytest.raises(ModelFileError, match="checksum mismatch"):
            load_predictor(copy)
    missing = tmp_path / "missing"
    shutil.copytree(exported, missing)
    (missing / "draws.npz").unlink()
    with pytest.raises(ModelFileError, match="missing"):
        load_predictor(missing)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(exported, corrupt)
    (corrupt / "manifest.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="corrupt JSON"):
        load_predictor(corrupt)
    tiny_grouped.save(tmp_path / "posterior")  # a saved posterior is not an exported predictor
    with pytest.raises(ModelFileError, match="not an exported bayesinf predictor"):
        load_predictor(tmp_path / "posterior")
    with pytest.raises(ModelFileError, match="no such file"):
        load_predictor(tmp_path / "nowhere")


@pytest.mark.parametrize("inputs, field", [
    ({"g": np.array([0, 1])}, "X"),  # missing row input
    ({"X": np.zeros((2, 3)), "g": np.array([0, 1])}, "X"),  # wrong trailing shape
    ({"X": np.zeros((2, 2)), "g": np.array([0.5, 1.0])}, "g"),  # not integers
    ({"X": np.zeros((2, 2)), "g": np.array([0, 3])}, "g"),  # outside the range seen at fit
    ({"X": np.zeros((2, 2)), "g": np.array([0, 1, 2])}, "g"),  # row counts differ
    ({"X": np.zeros((2, 2)), "g": np.array([0, 1]), "z": np.ones(2)}, "z"),  # unknown input
    ({"X": np.zeros((2, 2)), "g": np.array([0, 1]), "y": np.ones(2)}, "y"),  # observed input
    ({"X": np.zeros((2, 2)), "g": np.array([0, 1]), "n_groups": 4}, "n_groups"),  # static changed
    ({"X": [["a", "b"], ["c", "d"]], "g": np.array([0, 1])}, "X"),  # non-numeric
    ({"X": np.full((2, 2), np.nan), "g": np.array([0, 1])}, "X"),  # NaN
])
def test_wrong_inputs_name_the_field(exported, inputs, field):
    with pytest.raises(InputError) as info:
        load_predictor(exported).predict(**inputs)
    assert info.value.field == field


def test_bad_levels_kind_seed_rejected(exported):
    portable = load_predictor(exported)
    X, g = _rows(2)
    for kwargs, field in (({"levels": 1.5}, "levels"), ({"kind": "box"}, "kind"), ({"seed": -1}, "seed"),
                          ({"row_offset": -3}, "row_offset")):
        with pytest.raises(InputError) as info:
            portable.predict(X=X, g=g, **kwargs)
        assert info.value.field == field


def test_export_options(tiny_grouped, tmp_path):
    with pytest.raises(InputError, match="max_rows"):
        tiny_grouped.export(tmp_path / "a", max_rows=0)
    with pytest.raises(InputError, match="platforms"):
        tiny_grouped.export(tmp_path / "b", platforms="cpu")
    # 16-bit draws and a small chunk size: bfloat16 rounding (8 significant bits, to nearest) moves
    # each draw by at most 2^-8 of its size, so every predictive draw moves by at most
    # 2^-8 * (sum_i |x_i b_i| + |a_g|) with the same seed (the same noise).
    path = tiny_grouped.export(tmp_path / "c", max_rows=32, platforms=("cpu",), draws_dtype="bfloat16")
    portable = load_predictor(path)
    assert portable.max_rows == 32
    X, g = _rows(100, seed=4)
    expected = tiny_grouped.predict(X, g, seed=2)
    got = portable.predict(X=X, g=g, seed=2)
    b = tiny_grouped.flat_draws(["b"])["b"]
    a = tiny_grouped.flat_draws(["a"])["a"]
    bound = 2.0**-8 * (np.abs(b) @ np.abs(X).T + np.abs(a[:, g])) + 1e-5  # (draws, rows); 1e-5: float32 sums
    assert np.all(np.abs(got.draws - expected.draws) <= bound)
    assert not np.array_equal(got.draws, expected.draws)  # the rounding is there


# ----------------------------------------------------------------------------- small fits
def schools(school, sigma, y=None, num_schools=8):
    """Eight schools, non-centred: y_j ~ Normal(mu + tau eta_school, sigma_j), one row per school."""
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    eta = numpyro.sample("eta", dist.Normal(0.0, 1.0).expand([num_schools]).to_event(1))
    numpyro.sample("y", dist.Normal(mu + tau * eta[school], sigma), obs=y)


#: Short NUTS runs (one chain compiles and runs faster than SVI here); only the draws' shapes and
#: values matter to the export, not their quality.
SMALL_NUTS = dict(method="nuts", chains=1, draws=100, warmup=100, warn=False, progress=False)


@pytest.fixture(scope="module")
def small_fits():
    """Posteriors fitted on few rows (fewer than two row blocks): 10 rows of the grouped model and
    the 8 schools. Their exports must not depend on the fit's row count."""
    import bayesinf as bi
    import models
    from bayesinf.datasets import load_eight_schools

    X, g = _rows(10, seed=11)
    g[:3] = [0, 1, 2]
    y = X @ np.array([0.8, -0.6]) + np.array([-1.0, 0.0, 1.0])[g] + np.random.default_rng(12).normal(size=10)
    grouped = bi.fit(models.grouped, X, g, y, seed=0, **SMALL_NUTS)
    frame = load_eight_schools().frame
    eight = bi.fit(schools, frame["school"].to_numpy(), frame["sigma"].to_numpy(), frame["y"].to_numpy(),
                   seed=0, **SMALL_NUTS)
    return {"grouped10": grouped, "schools8": eight}


def _new_inputs(name, num_rows):
    rng = np.random.default_rng(num_rows)
    if name == "grouped10":
        X, g = _rows(num_rows, seed=num_rows)
        return {"X": X, "g": g}
    return {"school": rng.integers(0, 8, size=num_rows), "sigma": rng.uniform(5.0, 20.0, size=num_rows)}


@pytest.mark.parametrize("name", ["grouped10", "schools8"])
def test_small_fit_exports_and_predicts_the_same(small_fits, tmp_path, name):
    post = small_fits[name]
    assert post.schema.num_rows < 2 * 16  # fewer rows than the two probe buckets
    path = post.export(tmp_path / name, platforms=("cpu",))
    portable = load_predictor(path)
    manifest = json.loads((path / "manifest.json").read_text())
    assert ["16*row_blocks"] in [a["shape"][:1] for a in manifest["function_arguments"]]
    for num_rows in (1, 8, 37):
        inputs = _new_inputs(name, num_rows)
        expected = post.predict(**inputs, seed=3)
        _assert_same(expected, portable.predict(**inputs, seed=3))
        _assert_same(post.predict(**inputs, seed=4, kind="hdi"), portable.predict(**inputs, seed=4, kind="hdi"))


def test_export_with_one_bucket_per_call(small_fits, tmp_path):
    """A memory budget of one row block per call (16 rows) still exports a symbolic row count and
    runs larger requests in chunks of 16 rows, with the numbers of ``Posterior.predict``."""
    post = small_fits["grouped10"]
    portable = load_predictor(post.export(tmp_path / "one-block", platforms=("cpu",), memory_budget=1))
    assert portable.max_rows == 16
    inputs = _new_inputs("grouped10", 40)
    _assert_same(post.predict(**inputs, seed=5, memory_budget=1), portable.predict(**inputs, seed=5))
    _assert_same(post.predict(**inputs, seed=5), portable.predict(**inputs, seed=5))  # chunking is invisible


def test_max_rows_below_one_block_is_one_block(small_fits, tmp_path):
    portable = load_predictor(small_fits["grouped10"].export(tmp_path / "m", max_rows=5, platforms=("cpu",)))
    assert portable.max_rows == 16


def test_unknown_platform_rejected(tiny_grouped, tmp_path):
    with pytest.raises(InputError) as info:
        tiny_grouped.export(tmp_path / "p", platforms=("gpu",))
    assert info.value.field == "platforms" and "cuda" in str(info.value)


def test_string_column_error_fits_an_exported_predictor(exported):
    import pandas as pd

    frame = pd.DataFrame({"a": ["u", "v"], "b": [1.0, 2.0]})
    with pytest.raises(InputError) as info:
        load_predictor(exported).predict(X=frame, g=np.array([0, 1]))
    assert info.value.field == "X['a']"
    assert "formula" not in str(info.value) and "integer codes" in str(info.value)
    nullable = pd.DataFrame({"a": [0.5, 1.0], "b": [1.0, 2.0]}, dtype="Float64")  # numbers, as in predict
    predictor = load_predictor(exported)
    np.testing.assert_array_equal(predictor.predict(X=nullable, g=np.array([0, 1])).mean,
                                  predictor.predict(X=nullable.to_numpy(float), g=np.array([0, 1])).mean)


# ----------------------------------------------------------------------------- formula models
def test_formula_model_export_refused(tmp_path):
    """A formula model's predict builds its design from a DataFrame; an exported predictor cannot
    (it would evaluate formula text from the file), so export refuses and writes nothing."""
    import pandas as pd

    from bayesinf.formula import Model

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=20), "g": rng.choice(["a", "b"], size=20)})
    frame["y"] = frame["x"] + rng.normal(size=20)
    # A few SVI steps suffice: only the kind of model matters here, not the quality of the fit.
    post = Model.from_formula("y ~ x + (1 | g)", data=frame).fit(seed=0, **{**SMALL_NUTS, "draws": 5, "warmup": 5})
    with pytest.raises(InputError) as info:
        post.export(tmp_path / "formula.predictor")
    assert info.value.field == "posterior"
    assert "formula models cannot be exported" in str(info.value) and "Posterior.save" in str(info.value)
    assert not (tmp_path / "formula.predictor").exists()


def callback_model(X, y=None):
    """Linear regression whose predictive mean passes through a host callback, which jax.export
    cannot serialize (the fit, with ``y`` given, never calls it)."""
    import jax
    import numpyro
    import numpyro.distributions as dist

    b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    mean = X @ b
    if y is None:
        mean = jax.pure_callback(np.asarray, jax.ShapeDtypeStruct(mean.shape, mean.dtype), mean,
                                 vmap_method="sequential")
    numpyro.sample("y", dist.Normal(mean, 1.0), obs=y)


def test_unexportable_model_raises_a_bayesinf_error(tmp_path):
    import bayesinf as bi

    X, _ = _rows(10)
    post = bi.fit(callback_model, X, X @ np.array([1.0, -1.0]), seed=0, **{**SMALL_NUTS, "draws": 10, "warmup": 10})
    assert post.predict(X[:2]).mean.shape == (2,)  # it predicts in process
    with pytest.raises(InputError) as info:
        post.export(tmp_path / "callback.predictor")
    assert info.value.field == "posterior"
    assert "cannot be exported" in str(info.value) and "jax.pure_callback" in str(info.value)
    assert str(info.value.__cause__).strip().splitlines()[0] in str(info.value)  # JAX's reason is quoted
    assert not (tmp_path / "callback.predictor").exists()
