"""Monitoring of served models: every prediction recorded to a database, outcome feedback, and
reports of input drift, live calibration and traffic.

>>> recorder = Recorder("postgresql://monitor@db/monitor", store="models/")   # doctest: +SKIP
>>> app = create_app("models/", monitor=recorder)                            # doctest: +SKIP
>>> rep = report("models/", "radon", "postgresql://monitor@db/monitor", window="24h")  # doctest: +SKIP
>>> rep.drift, rep.calibration["log_radon"].coverage, rep.traffic.latency_ms  # doctest: +SKIP
>>> rep.to_pandas()["drift"]; rep.plot()                                      # doctest: +SKIP

Modules: ``db`` (schema, engines), ``recorder`` (the non-blocking writer), ``routes`` (feedback
and report endpoints), ``drift``, ``live`` (calibration from served summaries), ``traffic``,
``query``, ``report`` and ``plot``.
"""

from __future__ import annotations

from .drift import ALPHA, PSI_DRIFT, PSI_WATCH, FeatureDrift, input_drift, psi
from .plot import plot_monitor
from .recorder import Recorder
from .report import MonitorReport, report
from .traffic import Traffic, parse_window

__all__ = ["Recorder", "report", "MonitorReport", "FeatureDrift", "Traffic", "parse_window", "input_drift", "psi",
           "plot_monitor", "PSI_WATCH", "PSI_DRIFT", "ALPHA"]
