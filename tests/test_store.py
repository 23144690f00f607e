"""``ModelStore``: versions, aliases, metadata, validation of names, atomic and concurrent saves,
a ``kill -9`` mid-save, and tampered files rejected at load."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import bayesinf as bi
import models
from bayesinf.store import ModelStore

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def store(tmp_path):
    return ModelStore(tmp_path / "models")


def test_versions_aliases_list_delete(store, tiny_linreg, small_data):
    assert store.list() == []
    assert store.save(tiny_linreg, name="lin") == 1
    assert store.save(tiny_linreg, name="lin") == 2
    assert store.save(tiny_linreg, name="lin", version=7) == 7
    assert store.save(tiny_linreg, name="lin") == 8
    with pytest.raises(bi.InputError, match="already exists"):
        store.save(tiny_linreg, name="lin", version=2)
    store.set_alias("lin", "production", 2)
    assert store.list() == [{"name": "lin", "versions": [1, 2, 7, 8], "latest": 8, "aliases": {"production": 2}}]
    x = small_data["X"][:5]
    expected = tiny_linreg.predict(x, seed=1).mean
    for version in (None, 3 - 1, "production", "latest", "7"):
        loaded = store.load("lin", version=version)
        assert loaded.model is models.linreg
        np.testing.assert_array_equal(loaded.predict(x, seed=1).mean, expected)
    assert store.resolve("lin", "production") == 2
    with pytest.raises(bi.InputError) as info:
        store.load("lin", version=3)
    assert info.value.field == "version"
    with pytest.raises(bi.InputError) as info:
        store.load("nope")
    assert info.value.field == "name"
    store.delete("lin", 2)  # the alias pointing at it goes too
    assert store.versions("lin") == [1, 7, 8] and store.aliases("lin") == {}
    store.delete("lin")
    assert store.list() == []


def test_metadata_has_checksums_schema_and_training_statistics(store, tiny_grouped, small_data):
    store.save(tiny_grouped, name="grouped")
    meta = store.metadata("grouped")
    assert set(meta["files"]) == {"model/manifest.json", "model/arrays.npz"}
    assert all(len(d) == 64 for d in meta["files"].values())
    assert meta["model"] == "models:grouped" and meta["version"] == 1
    assert {"created_at", "versions", "inputs", "num_draws"} <= set(meta)
    assert meta["versions"]["numpyro"] and meta["versions"]["jax"]
    g = meta["inputs"]["arguments"]["g"]
    assert g["categories"] == [0, 1, 2] and g["int_range"] == [0, 2]
    assert sum(g["statistics"]["g"]["value_counts"].values()) == 60
    x = meta["inputs"]["arguments"]["X"]
    assert list(x["statistics"]) == ["X[0]", "X[1]"]
    assert x["statistics"]["X[1]"]["mean"] == pytest.approx(small_data["X"][:, 1].mean())
    assert x["range_seen"] == [pytest.approx(small_data["X"].min()), pytest.approx(small_data["X"].max())]
    assert meta["inputs"]["schema"] == tiny_grouped.schema.to_json()


def test_dataframe_columns_are_recorded(store, tiny_frame):
    store.save(tiny_frame, name="frame")
    x = store.metadata("frame")["inputs"]["arguments"]["X"]
    assert x["columns"] == ["a", "b"] and list(x["statistics"]) == ["a", "b"]


@pytest.mark.parametrize("name", ["", "../evil", "/abs", "a/b", "a\\b", "..", ".hidden", "x" * 65, "a b", "a..b",
                                  None, 3])
def test_names_are_validated(store, tiny_linreg, name):
    with pytest.raises(bi.InputError) as info:
        store.save(tiny_linreg, name=name)
    assert info.value.field == "name"
    assert not store.root.exists() or not any(store.root.iterdir())


@pytest.mark.parametrize("alias", ["3", "latest", "../x"])
def test_aliases_are_validated(store, tiny_linreg, alias):
    store.save(tiny_linreg, name="lin")
    with pytest.raises(bi.InputError) as info:
        store.set_alias("lin", alias, 1)
    assert info.value.field == "alias"


def test_models_that_cannot_be_imported_are_refused(store, small_data):
    import numpyro
    import numpyro.distributions as dist

    def local_model(X, y=None):
        b = numpyro.sample("b", dist.Normal(0, 1).expand([X.shape[1]]).to_event(1))
        numpyro.sample("y", dist.Normal(X @ b, 1.0), obs=y)

    post = bi.fit(local_model, small_data["X"], small_data["y"], method="svi", num_steps=50, check_every=50,
                  draws=20, warn=False, progress=False)
    with pytest.raises(bi.InputError, match="importable module"):
        store.save(post, name="local")
    assert store.list() == []


def test_tampered_file_is_rejected(store, tiny_linreg):
    store.save(tiny_linreg, name="lin")
    arrays = store.path("lin", 1) / "model" / "arrays.npz"
    data = bytearray(arrays.read_bytes())
    data[len(data) // 2] ^= 0xFF
    arrays.write_bytes(bytes(data))
    with pytest.raises(bi.ModelFileError, match="checksum mismatch") as info:
        store.load("lin")
    assert info.value.path == str(arrays)


def test_store_root_that_is_a_file_or_missing(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(bi.InputError, match="is a file, not a directory"):
        bi.ModelStore(tmp_path / "file")
    with pytest.raises(bi.InputError, match="the directory does not exist"):
        bi.ModelStore(tmp_path / "missing").load("lin")


@pytest.mark.parametrize("content", ["garbage{", "[1, 2]", '{"production": "two"}'])
def test_corrupt_alias_file(store, tiny_linreg, content):
    store.save(tiny_linreg, name="lin")
    store.set_alias("lin", "production", 1)
    store.save(tiny_linreg, name="other")
    path = store.root / "lin" / "aliases.json"
    path.write_text(content)
    with pytest.raises(bi.ModelFileError, match="corrupt alias file") as info:
        store.aliases("lin")
    assert info.value.path == str(path)
    # the rest of the store is still listed; the broken name says why it has no aliases
    entries = {e["name"]: e for e in store.list()}
    assert entries["other"] == {"name": "other", "versions": [1], "latest": 1, "aliases": {}}
    assert entries["lin"]["aliases"] == {} and "corrupt alias file" in entries["lin"]["error"]


def test_concurrent_saves_get_distinct_versions(store, tiny_linreg):
    results, errors = [], []

    def save():
        try:
            results.append(store.save(tiny_linreg, name="lin"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=save) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(results) == [1, 2, 3, 4, 5, 6] == store.versions("lin")


SAVER = textwrap.dedent("""
    import sys
    import numpy as np
    import bayesinf as bi
    import models
    from bayesinf.store import ModelStore

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2))
    post = bi.fit(models.linreg, X, X @ [1.0, -1.0], method="svi", num_steps=50, check_every=50, draws=20,
                  warn=False, progress=False)
    # Large draws make each save take a while, so the kill lands mid-save.
    post.draws = {k: np.repeat(v, 20_000, axis=1) for k, v in post.draws.items()}
    store = ModelStore(sys.argv[1])
    while True:
        print("saved", store.save(post, name="big"), flush=True)
""")


def test_kill_9_mid_save_leaves_only_whole_versions(tmp_path):
    root = tmp_path / "models"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", SAVER, str(root)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        saved = 0
        deadline = time.monotonic() + 120
        while saved < 2 and time.monotonic() < deadline:
            if child.stdout.readline().startswith("saved"):
                saved += 1
        assert saved == 2, "the child did not save"
        time.sleep(0.05 + np.random.default_rng().uniform(0, 0.1))  # somewhere inside the next save
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    store = ModelStore(root)
    versions = store.versions("big")
    assert len(versions) >= 2 and versions == list(range(1, len(versions) + 1))
    for v in versions:
        post = store.load("big", v)
        assert post.num_draws == 20 * 20_000
    # whatever the kill interrupted is a hidden temporary directory, never listed or loaded
    assert all(p.name.isdigit() or p.name.startswith(".") for p in (root / "big").iterdir())
    assert store.list()[0]["versions"] == versions
    assert json.loads((store.path("big") / "version.json").read_text())["version"] == versions[-1]
