"""A real ``bayesinf serve`` process on 127.0.0.1: start it, wait for ``/readyz``, predict, stop it;
and how ``--monitor-db`` chooses the prediction recorder."""

import importlib.util
import os
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import httpx
import numpy as np
import pytest

from bayesinf.store import ModelStore

TESTS = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bayesinf_serve_process(tmp_path, tiny_linreg):
    store = ModelStore(tmp_path / "models")
    store.save(tiny_linreg, name="lin")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "BAYESINF_API_KEY": "secret"}
    server = subprocess.Popen(
        [sys.executable, "-m", "bayesinf.cli", "serve", str(store.root), "--host", "127.0.0.1", "--port", str(port),
         "--max-rows", "16", "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                assert server.poll() is None, server.stdout.read()
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            else:
                raise AssertionError("the server did not become ready in 120 s")
            body = {"instances": [{"X": [0.5, -1.0]}], "seed": 4}
            assert client.post("/v1/models/lin/predict", json=body).status_code == 401
            r = client.post("/v1/models/lin/predict", json=body, headers={"X-API-Key": "secret"})
            assert r.status_code == 200, r.text
            assert r.headers["x-request-id"] == r.json()["request_id"]
            expected = tiny_linreg.predict(np.array([[0.5, -1.0]]), seed=4, levels=(0.5, 0.9))
            got = r.json()["predictions"][0]["y"]
            assert got["mean"] == float(expected.mean[0])
            assert got["intervals"]["0.9"] == {"lower": float(expected.interval(0.9)[0][0]),
                                               "upper": float(expected.interval(0.9)[1][0])}
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover
            server.kill()
            server.wait()
        server.stdout.close()
    assert server.returncode in (0, -15)
    if importlib.util.find_spec("bayesinf.monitor") is not None:  # monitoring is on by default
        assert (Path(store.root) / "monitor.sqlite3").is_file()


class Recorder:
    def __init__(self, url, store=None):
        self.url, self.store = url, store


@pytest.fixture
def fake_monitor_module(monkeypatch):
    module = types.ModuleType("bayesinf.monitor")
    module.Recorder = Recorder
    monkeypatch.setitem(sys.modules, "bayesinf.monitor", module)


def test_monitor_db_option(tmp_path, fake_monitor_module):
    from bayesinf.cli import _monitor

    assert _monitor("off", str(tmp_path)) is None and _monitor("OFF", str(tmp_path)) is None
    assert _monitor("postgresql+psycopg://db/monitoring", str(tmp_path)).url == "postgresql+psycopg://db/monitoring"
    default = _monitor(None, str(tmp_path))  # beside the models, in the store's root
    assert default.url == f"sqlite:///{(tmp_path.resolve() / 'monitor.sqlite3').as_posix()}"
    assert default.store == str(tmp_path)


def test_monitor_db_that_cannot_open_stops_serve(tmp_path, monkeypatch, capsys):
    from bayesinf.cli import main

    module = types.ModuleType("bayesinf.monitor")

    def refuse(url, store=None):
        raise ValueError(f"cannot open {url}")

    module.Recorder = refuse
    monkeypatch.setitem(sys.modules, "bayesinf.monitor", module)
    assert main(["serve", str(tmp_path), "--monitor-db", "sqlite:////nonexistent/dir/m.db"]) == 2
    assert "--monitor-db: cannot open sqlite:////nonexistent/dir/m.db" in capsys.readouterr().err


@pytest.mark.parametrize("option, value, fragment", [
    ("--port", "70000", "port number in [0, 65535]"), ("--max-rows", "-1", "at least 1"),
    ("--max-batch", "0", "at least 1"), ("--max-wait-ms", "-2", ">= 0"), ("--log-level", "nonsense", "invalid choice"),
])
def test_serve_options_are_checked_before_anything_loads(tmp_path, capsys, option, value, fragment):
    from bayesinf.cli import main

    with pytest.raises(SystemExit) as info:
        main(["serve", str(tmp_path), option, value])
    err = capsys.readouterr().err
    assert info.value.code == 2 and option in err and fragment in err


def test_serve_refuses_a_port_in_use_before_loading(tmp_path, capsys):
    import socket

    from bayesinf.cli import main

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", str(tmp_path), "--port", str(port), "--monitor-db", "off"]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
