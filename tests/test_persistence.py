"""``Posterior.save`` / ``bayesinf.load``: exact round trips, the model found again by its import
path, clear ``ModelFileError``s for anything that is not an intact saved model, atomic
replacement, and no unpickling."""

import hashlib
import io
import json
import shutil
import zipfile
from contextlib import contextmanager

import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import bayesinf as bi
import models
from bayesinf import persistence
from conftest import TINY_SVI


@pytest.fixture(params=["tiny_linreg", "linreg_nuts"])
def post(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_linreg):
    """A saved SVI posterior; tests that damage it copy it first (see ``damaged``)."""
    path = tmp_path_factory.mktemp("saved") / "model"
    tiny_linreg.save(path)
    return path


@pytest.fixture
def damaged(saved, tmp_path):
    """A fresh copy of the saved model, to be damaged by the test."""
    path = tmp_path / "model"
    shutil.copytree(saved, path)
    return path


@contextmanager
def model_file_error(path, *fragments):
    """Expect a ``ModelFileError`` about ``path`` whose message names it and contains ``fragments``."""
    with pytest.raises(bi.ModelFileError) as info:
        yield info
    assert info.value.path == str(path)
    message = str(info.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message


# ----------------------------------------------------------------------------- round trip
def test_round_trip_is_exact(post, tmp_path, linreg_problem):
    path = tmp_path / "nested" / "model"  # parent directories are created
    post.save(path)
    assert sorted(p.name for p in path.iterdir()) == ["arrays.npz", "manifest.json"]
    loaded = bi.load(path)  # no model=: imported from the recorded path
    assert loaded.model is models.linreg
    assert loaded.model_path == "models:linreg"
    assert (loaded.method, loaded.dtype, loaded.seed) == (post.method, post.dtype, post.seed)
    assert loaded.schema == post.schema
    assert loaded.sites == post.sites
    for group in ("draws", "sample_stats", "data"):
        got, expected = getattr(loaded, group), getattr(post, group)
        assert got.keys() == expected.keys()
        for k in expected:
            np.testing.assert_array_equal(got[k], expected[k])
            assert got[k].dtype == expected[k].dtype
    if post.losses is None:
        assert loaded.losses is None
    else:
        np.testing.assert_array_equal(loaded.losses, post.losses)
    assert loaded.settings == json.loads(json.dumps(post.settings))
    assert loaded.summary().equals(post.summary())

    x = linreg_problem.X[:7, : post.schema["X"].shape[0]]
    a = post.predict(x, levels=(0.5, 0.9), seed=21)
    b = loaded.predict(x, levels=(0.5, 0.9), seed=21)
    np.testing.assert_array_equal(b.draws, a.draws)
    for attr in ("mean", "median", "sd", "lower", "upper"):
        np.testing.assert_array_equal(getattr(b["y"], attr), getattr(a["y"], attr))
    assert not np.array_equal(loaded.predict(x, seed=22).draws, b.draws)


def test_manifest_records_import_path_and_checksum(saved):
    manifest = json.loads((saved / "manifest.json").read_text())
    assert manifest["format"] == persistence.FORMAT
    assert manifest["format_version"] == persistence.FORMAT_VERSION
    assert manifest["model"] == "models:linreg"
    assert manifest["files"] == {"arrays.npz": hashlib.sha256((saved / "arrays.npz").read_bytes()).hexdigest()}


def test_load_with_explicit_model(saved):
    loaded = bi.load(saved, model=models.linreg)
    assert loaded.model is models.linreg


def _renamed_sites(X, y=None, sigma=1.0, tau=2.0):
    """``models.linreg`` with its coefficient site renamed and an extra latent site."""
    coef = numpyro.sample("coef", dist.Normal(0.0, tau).expand([X.shape[1]]).to_event(1))
    shift = numpyro.sample("shift", dist.Normal(100.0, 1.0))
    numpyro.sample("y", dist.Normal(X @ coef + shift, sigma), obs=y)


def _wider(X, y=None, sigma=1.0, tau=2.0):
    """``models.linreg`` with one coefficient more than the data's columns."""
    b = numpyro.sample("b", dist.Normal(0.0, tau).expand([X.shape[1] + 1]).to_event(1))
    numpyro.sample("y", dist.Normal(X @ b[:-1], sigma), obs=y)


@pytest.mark.parametrize("model, fragments", [
    (_renamed_sites, ("lacks the saved latent sites ['b']", "its latent sites ['coef', 'shift'] have no saved draws")),
    (_wider, ("its site 'b' has shape",)),
])
def test_load_refuses_a_model_that_does_not_match_the_draws(saved, model, fragments):
    # Such a model would draw its unknown sites from their priors at predict time, silently.
    with model_file_error(saved, "does not match the saved draws", "load(path, model=...)", *fragments):
        bi.load(saved, model=model)


# ----------------------------------------------------------------------------- bad files
def test_missing_directory(tmp_path):
    with model_file_error(tmp_path / "nope", "no such file"):
        bi.load(tmp_path / "nope")


def test_plain_file(tmp_path):
    path = tmp_path / "model.txt"
    path.write_text("hello")
    with model_file_error(path, "not a bayesinf model directory"):
        bi.load(path)


def test_missing_manifest(damaged):
    (damaged / "manifest.json").unlink()
    with model_file_error(damaged / "manifest.json", "missing"):
        bi.load(damaged)


def test_corrupt_json(damaged):
    text = (damaged / "manifest.json").read_text()
    (damaged / "manifest.json").write_text(text[: len(text) // 2])
    with model_file_error(damaged / "manifest.json", "corrupt JSON"):
        bi.load(damaged)


@pytest.mark.parametrize("content", [
    {"format": "sklearn.pickle", "format_version": 1},
    {"format_version": 1},
    ["not", "a", "dict"],
    "just a string",
])
def test_foreign_format(damaged, content):
    (damaged / "manifest.json").write_text(json.dumps(content))
    with model_file_error(damaged / "manifest.json", "not a bayesinf posterior"):
        bi.load(damaged)


def test_unsupported_format_version(damaged):
    manifest = json.loads((damaged / "manifest.json").read_text())
    manifest["format_version"] = 99
    (damaged / "manifest.json").write_text(json.dumps(manifest))
    with model_file_error(damaged / "manifest.json", "version 99"):
        bi.load(damaged)


def test_invalid_file_name_in_manifest(damaged):
    manifest = json.loads((damaged / "manifest.json").read_text())
    manifest["files"]["../outside.npz"] = "0" * 64
    (damaged / "manifest.json").write_text(json.dumps(manifest))
    with model_file_error(damaged / "manifest.json", "invalid file name"):
        bi.load(damaged)


def test_tampered_arrays(damaged):
    data = bytearray((damaged / "arrays.npz").read_bytes())
    data[len(data) // 2] ^= 0x01  # flip one bit
    (damaged / "arrays.npz").write_bytes(bytes(data))
    with model_file_error(damaged / "arrays.npz", "checksum mismatch"):
        bi.load(damaged)


def test_missing_arrays(damaged):
    (damaged / "arrays.npz").unlink()
    with model_file_error(damaged / "arrays.npz", "missing"):
        bi.load(damaged)


def test_incomplete_manifest(damaged):
    manifest = json.loads((damaged / "manifest.json").read_text())
    del manifest["schema"]
    (damaged / "manifest.json").write_text(json.dumps(manifest))
    with model_file_error(damaged / "manifest.json", "incomplete or invalid manifest"):
        bi.load(damaged)


_UNPICKLED = []


def _record(value):
    _UNPICKLED.append(value)
    return value


class _Payload:
    """Unpickling this calls ``_record``: a stand-in for arbitrary code in a pickle."""

    def __reduce__(self):
        return (_record, ("unpickled",))


def _write_object_npz(path):
    """Replace the model's arrays with an npz holding a pickled object array, and re-checksum."""
    arrays = dict(np.load(path / "arrays.npz", allow_pickle=False))
    arrays["posterior/b"] = np.array([_Payload()], dtype=object)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    (path / "arrays.npz").write_bytes(buffer.getvalue())
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["arrays.npz"] = persistence.sha256_file(path / "arrays.npz")
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_object_arrays_are_not_unpickled(damaged):
    _write_object_npz(damaged)
    # the file really holds a pickle: loading it with pickle enabled would run _record
    with zipfile.ZipFile(damaged / "arrays.npz") as z:
        assert "posterior/b.npy" in z.namelist()
    with model_file_error(damaged / "arrays.npz", "allow_pickle"):
        bi.load(damaged)
    assert _UNPICKLED == []
    with np.load(damaged / "arrays.npz", allow_pickle=True) as npz:  # the control
        npz["posterior/b"]
    assert _UNPICKLED == ["unpickled"]
    _UNPICKLED.clear()


# ----------------------------------------------------------------------------- replacing
def leftovers(parent, name):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def test_save_replaces_existing_model(tmp_path, tiny_linreg, small_data):
    path = tmp_path / "model"
    tiny_linreg.save(path)
    other = bi.fit(models.linreg, small_data["X"], small_data["y"], seed=9, **TINY_SVI)
    assert not np.array_equal(other.draws["b"], tiny_linreg.draws["b"])
    other.save(path)
    np.testing.assert_array_equal(bi.load(path).draws["b"], other.draws["b"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert leftovers(tmp_path, "model") == []


def test_failed_save_keeps_old_model_and_no_temporary(tmp_path, tiny_linreg, monkeypatch):
    path = tmp_path / "model"
    tiny_linreg.save(path)
    before = {p.name: p.read_bytes() for p in path.iterdir()}

    def crash(_):
        raise OSError("disk full")

    monkeypatch.setattr(persistence, "sha256_file", crash)  # fails after arrays.npz is written
    with pytest.raises(OSError, match="disk full"):
        tiny_linreg.save(path)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    bi.load(path)


def test_save_into_empty_directory(tmp_path, tiny_linreg):
    path = tmp_path / "model"
    path.mkdir()
    tiny_linreg.save(path)
    bi.load(path)


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_save_refuses_to_replace_other_things(tmp_path, tiny_linreg, kind):
    path = tmp_path / "results"
    if kind == "file":
        path.write_text("precious")
        keep = path
    else:
        path.mkdir()
        keep = path / "notes.txt"
        keep.write_text("precious")
    with pytest.raises(bi.InputError, match="not a bayesinf model directory") as info:
        tiny_linreg.save(path)
    assert info.value.field == "path"
    assert keep.read_text() == "precious"
    assert leftovers(tmp_path, "results") == []


# ----------------------------------------------------------------------------- models not importable
def test_model_defined_in_a_function(tmp_path, small_data):
    def local_linreg(X, y=None):
        b = numpyro.sample("b", dist.Normal(0.0, 2.0).expand([X.shape[1]]).to_event(1))
        numpyro.sample("y", dist.Normal(X @ b, 1.0), obs=y)

    post = bi.fit(local_linreg, small_data["X"], small_data["y"], **TINY_SVI)
    assert post.model_path is None
    path = tmp_path / "model"
    post.save(path)
    assert json.loads((path / "manifest.json").read_text())["model"] is None
    with model_file_error(path, "cannot find the model function", "load(path, model=...)"):
        bi.load(path)
    loaded = bi.load(path, model=local_linreg)
    x = small_data["X"][:5]
    np.testing.assert_array_equal(loaded.predict(x, seed=1).draws, post.predict(x, seed=1).draws)


def test_model_import_path_that_no_longer_exists(damaged):
    manifest = json.loads((damaged / "manifest.json").read_text())
    manifest["model"] = "models:renamed_linreg"
    (damaged / "manifest.json").write_text(json.dumps(manifest))
    with model_file_error(damaged, "models:renamed_linreg", "model=..."):
        bi.load(damaged)
    assert bi.load(damaged, model=models.linreg).model is models.linreg
