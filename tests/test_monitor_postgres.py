"""Monitoring against a real PostgreSQL server, started for these tests from the PostgreSQL
binaries on this machine (``initdb``/``pg_ctl`` on PATH or under /usr/lib/postgresql/*/bin):
records, feedback and reports through psycopg 3, and a server stopped and restarted under a
recorder that keeps taking predictions."""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

import numpy as np
import pytest

from bayesinf.monitor import Recorder, report
from test_monitor import LEVELS, monitor_client, normal_row


def _binaries() -> str | None:
    """Directory holding initdb and pg_ctl, or None."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return os.path.dirname(found)
    for directory in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(directory, "initdb")) and os.path.exists(os.path.join(directory, "pg_ctl")):
            return directory
    return None


def _as_server_user() -> list[str]:
    """initdb refuses to run as root: run it (and the server) as the 'postgres' user then."""
    if os.geteuid() != 0:
        return []
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no 'postgres' user to run the PostgreSQL server as")
    if not shutil.which("runuser"):
        pytest.skip("running as root and 'runuser' is missing, so the PostgreSQL server cannot be started")
    return ["runuser", "-u", "postgres", "--"]


class PostgresServer:
    """A throw-away PostgreSQL cluster on 127.0.0.1 at a free port, in a temporary directory."""

    def __init__(self, bindir: str):
        self.bindir = bindir
        self.prefix = _as_server_user()
        self.root = tempfile.mkdtemp(prefix="bayesinf-pg-")
        if self.prefix:
            import pwd

            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.data = os.path.join(self.root, "data")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()

    def _run(self, tool, *args):
        result = subprocess.run([*self.prefix, os.path.join(self.bindir, tool), *args], capture_output=True,
                                text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed: {result.stdout}\n{result.stderr}")

    def start(self):
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.root, "log"), "-w", "-t", "60", "-o",
                  f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off", "start")

    def stop(self):
        self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def new_database(self) -> str:
        import sqlalchemy as sa

        name = f"monitor_{uuid.uuid4().hex[:12]}"
        engine = sa.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres",
                                  isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def close(self):
        subprocess.run([*self.prefix, os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres():
    pytest.importorskip("psycopg", reason="psycopg 3 is needed for PostgreSQL (pip install 'psycopg[binary]')")
    bindir = _binaries()
    if bindir is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found on PATH or under /usr/lib/postgresql/*/bin; "
                    "install the 'postgresql' package to run these tests")
    server = PostgresServer(bindir)
    yield server
    server.close()


def _send(recorder, prefix, n):
    inputs, rows = {"X": np.ones((1, 2))}, [normal_row(0.0, 1.0)]
    start = time.perf_counter()
    for i in range(n):
        recorder.record_prediction(request_id=f"{prefix}{i}", model="lin", version=1, received_at=time.time(),
                                   latency_ms=2.0, inputs=inputs, rows=rows, levels=LEVELS, kind="eti")
    return time.perf_counter() - start


def test_records_feedback_and_report_on_postgresql(postgres):
    rec = Recorder(postgres.new_database())
    try:
        assert rec.url.startswith("postgresql+psycopg://")
        rng = np.random.default_rng(0)
        mu = rng.normal(size=(50, 2))
        for i in range(50):
            rec.record_prediction(request_id=f"r{i}", model="lin", version=1, received_at=time.time(),
                                  latency_ms=2.0, inputs={"X": mu[i:i + 1]}, rows=[normal_row(float(mu[i, 0]), 1.0)],
                                  levels=LEVELS, kind="eti")
        rec.record_error(model="lin", version=1, status=503, received_at=time.time(), latency_ms=1.0)
        client = monitor_client(rec)
        y = mu[:, 0] + rng.normal(size=50)
        items = [{"request_id": f"r{i}", "row": 0, "y": float(y[i])} for i in range(50)]
        assert client.post("/v1/models/lin/feedback", json={"feedback": items}).json() == {"recorded": 50}
        assert client.post("/v1/models/lin/feedback", json={"request_id": "zz", "row": 0, "y": 1}).status_code == 404
        body = client.get("/v1/models/lin/monitor", params={"window": "PT1H"}).json()
        assert body["traffic"]["num_requests"] == 50 and body["traffic"]["errors_by_status"] == {"503": 1}
        assert body["calibration"]["y"]["num_rows"] == 50
        rep = report(None, "lin", rec.url, window="1h")
        assert rep.calibration["y"].num_rows == 50 and rep.traffic.num_errors == 1
        assert rec.stats()["dropped"] == 0
    finally:
        rec.close()


def test_recorder_survives_a_postgresql_outage_and_resumes(postgres):
    rec = Recorder(postgres.new_database(), max_queue=100, batch_size=20, timeout=1.0)
    try:
        _send(rec, "before", 10)
        assert rec.flush(30) and rec.stats()["recorded"] == 10
        postgres.stop()
        try:
            elapsed = _send(rec, "during", 300)
            assert elapsed < 0.5  # the request path never waits for the database (about 3 ms expected)
            deadline = time.monotonic() + 30
            while rec.stats()["db_errors"] == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            down = rec.stats()
            assert down["db_errors"] >= 1 and down["dropped"] >= 200 and down["writer_alive"]
        finally:
            postgres.start()
        # Writing resumes by itself: records sent after the restart are written.
        deadline = time.monotonic() + 30
        i = 0
        while rec.stats()["recorded"] == 10 and time.monotonic() < deadline:
            _send(rec, f"probe{i}-", 1)
            i += 1
            time.sleep(0.2)
        rec.flush(30)
        before = rec.stats()
        _send(rec, "after", 20)
        assert rec.flush(30)
        after = rec.stats()
        assert after["recorded"] == before["recorded"] + 20 and after["dropped"] == before["dropped"]
        assert after["recorded"] + after["dropped"] == 10 + 300 + i + 20
        rep = report(None, "lin", rec.url)
        assert rep.traffic.num_requests == after["recorded"]
    finally:
        rec.close()
