"""``report(store, name, db)``: input drift, live calibration and traffic of a served model, read
from the monitoring database, as a ``MonitorReport`` value."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..calibration.report import FLAG_SE, CalibrationReport
from ..errors import InputError
from .drift import ALPHA, FeatureDrift, input_drift
from .traffic import Traffic, parse_window, traffic

__all__ = ["MonitorReport", "report", "MAX_ROWS"]

#: Newest data rows read for the drift check of one report.
MAX_ROWS = 100_000
#: A report lists server errors (5xx) as a problem above this share of requests.
SERVER_ERROR_RATE = 0.01


def _site_findings(cal: CalibrationReport) -> tuple[list[str], list[str]]:
    """Problems and notes of one site's live calibration: levels flagged by the exact binomial
    rule of ``bayesinf.monitor.live.coverage_status``, a non-uniform PIT, and outcomes left out
    of the scores (problems); levels too few outcomes to judge (notes)."""
    statuses = cal.info.get("coverage_status")
    if statuses is None:  # not built by live_calibration: the plain 3-SE rule
        return list(cal.problems), []
    problems, notes = [], []
    for level, cov, z, n, p, status in zip(cal.levels, cal.coverage, cal.z, cal.info["rows_per_level"],
                                           cal.info["coverage_p"], statuses):
        if status in ("under-coverage", "over-coverage"):
            problems.append(f"{status} at {level:.0%}: {cov:.3f} on {n} outcomes ({abs(z):.1f} SE "
                            f"{'below' if z < 0 else 'above'}, exact binomial p={p:.2g})")
        elif status == "too few outcomes":
            notes.append(f"too few outcomes to judge coverage at {level:.0%}: {cov:.3f} on {n} outcomes "
                         f"(exact binomial p={p:.2g})")
    if not cal.pit_test.is_uniform:
        problems.append(f"PIT not uniform ({cal.pit_test})")
    excluded = cal.info.get("excluded_scores") or {}
    parts = [f"{excluded['crps']} of {cal.num_rows} outcomes left out of the CRPS"] if excluded.get("crps") else []
    parts += [f"{n} of {rows} left out of the interval score at {level:.0%}" for level, n, rows in
              zip(cal.levels, excluded.get("interval_score", ()), cal.info["rows_per_level"]) if n]
    if parts:
        problems.append("; ".join(parts) + ": their scores exceed the float64 range (outcomes far outside the "
                        "served intervals)")
    if cal.info.get("non_finite_outcomes"):
        problems.append(f"{cal.info['non_finite_outcomes']} outcomes are not finite numbers and were not scored")
    return problems, notes


def _crps(cal: CalibrationReport) -> float:
    return cal.info["crps"] if "crps" in cal.info else float(cal.crps.mean())


def _finite(value):
    """JSON-safe: NaN and infinities become None, numpy values Python ones."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, np.ndarray):
        return _finite(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


@dataclass(frozen=True)
class MonitorReport:
    """What a served model met over a window: traffic, input drift and live calibration.

    Attributes
    ----------
    model : str
    version : int or None
        Version reported (None when nothing was recorded).
    window : float or None
        Window length in seconds (None: all records).
    traffic : Traffic
        Volume, latency percentiles, error rates, timeline.
    drift : tuple of FeatureDrift, or None
        Per input column (None without a store to compare with).
    calibration : dict of str -> CalibrationReport
        Per observed site with outcome feedback: coverage of the served intervals with binomial
        SEs and exact binomial verdicts, PIT, CRPS (see ``bayesinf.monitor.live``).
    feedback_rows : dict of str -> int
        Outcomes received per site.
    num_drift_rows : int
        Newest rows whose inputs the drift check read (at most ``MAX_ROWS``).
    """

    model: str
    version: int | None
    window: float | None
    traffic: Traffic
    drift: tuple[FeatureDrift, ...] | None
    calibration: dict[str, CalibrationReport]
    feedback_rows: dict[str, int]
    num_drift_rows: int
    info: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ verdicts
    @property
    def drifted(self) -> list[str]:
        """Columns whose status is "drift"."""
        return [d.feature for d in self.drift or () if d.status == "drift"]

    @property
    def problems(self) -> list[str]:
        """Readable findings: drifted columns, miscalibrated sites (a level more than 3 SEs off
        nominal and confirmed by an exact binomial test, see ``bayesinf.monitor.live``; a
        non-uniform PIT; outcomes whose scores were left out), server errors above 1% of
        requests."""
        out = [f"input drift in '{d.feature}' (PSI {d.psi:.2f}, p={d.p_value:.2g})"
               for d in self.drift or () if d.status == "drift"]
        for site, cal in self.calibration.items():
            out.extend(f"'{site}': {p}" for p in _site_findings(cal)[0])
        if self.traffic.server_error_rate > SERVER_ERROR_RATE:
            out.append(f"server errors: {self.traffic.server_error_rate:.2%} of requests")
        return out

    @property
    def notes(self) -> list[str]:
        """Remarks that are not problems: levels whose coverage is more than 3 SEs off nominal
        on too few outcomes for the exact binomial test to confirm it."""
        return [f"'{site}': {n}" for site, cal in self.calibration.items() for n in _site_findings(cal)[1]]

    @property
    def ok(self) -> bool:
        return not self.problems

    # ------------------------------------------------------------------ exports
    def to_dict(self) -> dict:
        """The report as JSON-ready values (NaN as None)."""
        t = self.traffic
        calibration = {}
        for site, cal in self.calibration.items():
            problems, notes = _site_findings(cal)
            num_levels = len(cal.levels)
            calibration[site] = {
                "num_rows": cal.num_rows, "kind": cal.kind,
                "levels": [{"level": v, "coverage": c, "se": s, "z": z, "rows": n, "p_value": p, "status": st,
                            "mean_width": w, "interval_score": i}
                           for v, c, s, z, n, p, st, w, i in zip(
                               cal.levels, cal.coverage, cal.coverage_se, cal.z, cal.info["rows_per_level"],
                               cal.info.get("coverage_p", [None] * num_levels),
                               cal.info.get("coverage_status", [None] * num_levels), cal.mean_width,
                               cal.interval_score)],
                "crps": _crps(cal),
                "excluded_scores": cal.info.get("excluded_scores"),
                "non_finite_outcomes": cal.info.get("non_finite_outcomes", 0),
                "pit_test": {"method": cal.pit_test.method, "statistic": cal.pit_test.statistic,
                             "p_value": cal.pit_test.p_value, "alpha": cal.pit_test.alpha},
                "pit_histogram": np.histogram(cal.pit, bins=10, range=(0, 1))[0].tolist(),
                "problems": problems, "notes": notes,
            }
        return _finite({
            "model": self.model, "version": self.version, "window_s": self.window,
            "start": t.start, "end": t.end,
            "traffic": {"num_requests": t.num_requests, "num_rows": t.num_rows, "num_errors": t.num_errors,
                        "error_rate": t.error_rate, "server_error_rate": t.server_error_rate,
                        "errors_by_status": t.errors_by_status, "latency_ms": t.latency_ms,
                        "requests_per_minute": t.requests_per_minute, "timeline": t.timeline},
            "drift": None if self.drift is None else [d.to_dict() for d in self.drift],
            "num_drift_rows": self.num_drift_rows,
            "calibration": calibration, "feedback_rows": self.feedback_rows,
            "problems": self.problems, "notes": self.notes, "ok": self.ok, "info": self.info,
        })

    def to_pandas(self) -> dict:
        """Tables: ``traffic`` (one row), ``drift`` (one row per column), ``calibration`` (one row
        per site and level) and ``timeline`` (one row per time bucket)."""
        import pandas as pd

        t = self.traffic
        traffic_row = {"model": self.model, "version": self.version, "start": pd.to_datetime(t.start, unit="s"),
                       "end": pd.to_datetime(t.end, unit="s"), "requests": t.num_requests, "rows": t.num_rows,
                       "errors": t.num_errors, "error_rate": t.error_rate, "server_error_rate": t.server_error_rate,
                       "requests_per_minute": t.requests_per_minute,
                       **{f"latency_{k}_ms": v for k, v in t.latency_ms.items()}}
        drift = pd.DataFrame([d.to_dict() for d in self.drift or ()],
                             columns=list(FeatureDrift.__dataclass_fields__)).set_index("feature")
        rows = []
        for site, cal in self.calibration.items():
            for i, level in enumerate(cal.levels):
                status = cal.info["coverage_status"][i] if "coverage_status" in cal.info else (
                    "ok" if abs(cal.z[i]) <= FLAG_SE else "under-coverage" if cal.z[i] < 0 else "over-coverage")
                rows.append({"site": site, "nominal": level, "coverage": cal.coverage[i], "se": cal.coverage_se[i],
                             "z": cal.z[i], "rows": cal.info["rows_per_level"][i],
                             "p_value": cal.info.get("coverage_p", [np.nan] * len(cal.levels))[i],
                             "status": status, "mean_width": cal.mean_width[i],
                             "interval_score": cal.interval_score[i], "crps": _crps(cal),
                             "pit_p_value": cal.pit_test.p_value,
                             "ok": status not in ("under-coverage", "over-coverage")})
        calibration = pd.DataFrame(rows, columns=["site", "nominal", "coverage", "se", "z", "rows", "p_value",
                                                  "status", "mean_width", "interval_score", "crps", "pit_p_value",
                                                  "ok"])
        timeline = pd.DataFrame(t.timeline)
        timeline["start"] = pd.to_datetime(timeline["start"], unit="s")
        return {"traffic": pd.DataFrame([traffic_row]), "drift": drift,
                "calibration": calibration.set_index(["site", "nominal"]), "timeline": timeline.set_index("start")}

    def plot(self):
        """Requests and errors over time, latency, PSI per column, and coverage per site (four
        axes); see ``bayesinf.monitor.plot_monitor``."""
        from .plot import plot_monitor

        return plot_monitor(self)

    def __repr__(self):
        t = self.traffic
        lines = [f"MonitorReport(model={self.model!r}, version={self.version}, requests={t.num_requests}, "
                 f"rows={t.num_rows}, errors={t.num_errors})",
                 f"  latency p50 {t.latency_ms['p50']:.3g} ms, p99 {t.latency_ms['p99']:.3g} ms; "
                 f"error rate {t.error_rate:.2%}; {t.requests_per_minute:.3g} requests/min"]
        if self.drift is not None:
            lines.append(f"  drift over {self.num_drift_rows} rows: " + ", ".join(
                f"{d.feature} {d.status} (PSI {d.psi:.2f})" for d in self.drift))
        for site, cal in self.calibration.items():
            cover = ", ".join(f"{v:g}: {c:.3f}±{s:.3f}" for v, c, s in zip(cal.levels, cal.coverage, cal.coverage_se))
            lines.append(f"  '{site}' on {cal.num_rows} outcomes: coverage {cover}; CRPS {_crps(cal):.4g}; "
                         f"PIT p={cal.pit_test.p_value:.2g}")
        lines.append("  " + ("no problems found" if self.ok else "; ".join(self.problems)))
        if self.notes:
            lines.append("  notes: " + "; ".join(self.notes))
        return "\n".join(lines)


# ----------------------------------------------------------------------------- building it
def _store(store):
    if store is None or hasattr(store, "metadata"):
        return store
    from ..store import ModelStore

    return ModelStore(store)


def _live_inputs(rows: list[dict]) -> dict[str, np.ndarray]:
    out = {}
    names = {name for row in rows for name in row}
    for name in names:
        values = [row[name] for row in rows if name in row]
        try:
            out[name] = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):  # string levels compare as categories; ragged values not at all
            if all(isinstance(v, str) for v in values):
                out[name] = np.asarray(values, dtype=object)
    return out


def report(store, name: str, db, window=None, version=None, *, end: float | None = None, alpha: float = ALPHA,
           max_rows: int = MAX_ROWS, seed: int = 0) -> MonitorReport:
    """Monitoring report of model ``name``: traffic, input drift and live calibration.

    Parameters
    ----------
    store : ModelStore, str, Path or None
        Store of the served model (training-input statistics for the drift check); None skips
        the drift check.
    name : str
        Model name.
    db : str, Path or Recorder
        Monitoring database URL or SQLite path, or the service's ``Recorder`` (its queue is
        flushed first, so the report includes requests just answered).
    window : str, float, timedelta or None
        Requests received in the last ``window`` before ``end`` (``"1h"``, ``"7d"``,
        ``"PT30M"``; see ``parse_window``); None for all.
    version : int or str, optional
        Version (or alias, with a store) to report; by default the newest version with requests
        in the window. Errors whose version is unknown count for every version.
    end : float, optional
        End of the window, Unix seconds (default now).
    alpha : float
        Family-wise level of the drift tests and level of the PIT uniformity tests.
    max_rows : int
        Newest data rows read for the drift check.
    seed : int
        Seed of the randomized PIT.

    Returns
    -------
    MonitorReport

    Raises
    ------
    InputError
        Bad window, version or database URL, a SQLite file that does not exist, or a model name
        unknown to the store.
    """
    from .db import create_engine, ensure_schema, normalize_url
    from .live import live_calibration
    from .query import newest_version, read_records

    seconds = parse_window(window)
    end = float(time.time() if end is None else end)
    start = None if seconds is None else end - seconds
    store = _store(store)
    if hasattr(db, "record_prediction"):
        db.flush(timeout=5.0)
        engine, own = db.engine, False
    else:
        url = normalize_url(db)
        database = url.split("///", 1)[1] if url.startswith("sqlite") and "///" in url else None
        if database and database != ":memory:" and not os.path.exists(database):
            raise InputError("db", f"names the SQLite file {database!r}, which does not exist",
                             "the file the service's Recorder writes to")
        engine, own = create_engine(url), True
    try:
        ensure_schema(engine)
        with engine.connect() as conn:
            if version is not None and store is not None:
                version = store.resolve(name, version)
            elif version is not None:
                if isinstance(version, bool) or not str(version).isdigit():
                    raise InputError("version", f"must be a version number without a store; got {version!r}")
                version = int(version)
            else:
                version = newest_version(conn, name, start, end)
            if store is not None and version is None:
                store.resolve(name)  # an unknown name is an error, a silent model is not
            records = read_records(conn, name, version, start, end, max_rows)
    finally:
        if own:
            engine.dispose()
    drift = None
    if store is not None and version is not None:
        arguments = store.metadata(name, version)["inputs"]["arguments"]
        drift = tuple(input_drift(arguments, _live_inputs(records.inputs), alpha=alpha))
    calibration = live_calibration(records.outcomes, seed=seed, alpha=alpha)
    feedback_rows: dict[str, int] = {}
    for site, *_ in records.outcomes:
        feedback_rows[site] = feedback_rows.get(site, 0) + 1
    return MonitorReport(
        model=name, version=version, window=seconds,
        traffic=traffic(records.received_at, records.latency_ms, records.num_rows, records.error_at,
                        records.error_status, start, end),
        drift=drift, calibration=calibration, feedback_rows=feedback_rows, num_drift_rows=len(records.inputs),
        info={"alpha": alpha, "seed": seed},
    )
