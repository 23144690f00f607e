"""The monitoring figure: traffic and errors over time, latency, input drift and live coverage."""

from __future__ import annotations

import numpy as np

from .drift import PSI_DRIFT, PSI_WATCH

__all__ = ["plot_monitor"]

_STATUS_COLOURS = {"drift": "C3", "watch": "C1", "stable": "C0", "no data": "0.7"}


def plot_monitor(report, k: float = 3.0):
    """Four axes of a ``MonitorReport``: requests and errors per time bucket; median latency per
    bucket with the window's p50/p99; PSI per input column against the 0.1 and 0.2 thresholds;
    observed against nominal coverage per site with ``k``-binomial-SE error bars.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7), layout="constrained")
    t = report.traffic
    timeline = t.timeline
    minutes = (np.asarray(timeline["start"]) - t.end) / 60.0
    width = (minutes[1] - minutes[0]) if minutes.size > 1 else 1.0

    ax = axes[0, 0]
    ax.bar(minutes, timeline["requests"], width=width, align="edge", color="C0", label="requests")
    ax.bar(minutes, timeline["errors"], width=width, align="edge", color="C3", label="errors")
    ax.set(xlabel="minutes before end", ylabel="count", title=f"Requests ({t.num_requests}, "
           f"error rate {t.error_rate:.2%})")
    ax.legend(fontsize="small")

    ax = axes[0, 1]
    p50 = np.array([np.nan if v is None else v for v in timeline["latency_p50_ms"]], dtype=np.float64)
    ax.plot(minutes + width / 2, p50, "o-", color="C0", ms=3, label="median per bucket")
    for name, style in (("p50", "--"), ("p99", ":")):
        if np.isfinite(t.latency_ms[name]):
            ax.axhline(t.latency_ms[name], color="0.4", ls=style, lw=1, label=f"{name} {t.latency_ms[name]:.3g} ms")
    ax.set(xlabel="minutes before end", ylabel="latency (ms)", title="Latency")
    ax.legend(fontsize="small")

    ax = axes[1, 0]
    if report.drift:
        names = [d.feature for d in report.drift]
        values = [0.0 if not np.isfinite(d.psi) else d.psi for d in report.drift]
        ax.barh(names, values, color=[_STATUS_COLOURS[d.status] for d in report.drift])
        ax.axvline(PSI_WATCH, color="C1", ls="--", lw=1)
        ax.axvline(PSI_DRIFT, color="C3", ls="--", lw=1)
        ax.invert_yaxis()
    else:
        ax.text(0.5, 0.5, "no drift check (no store or no rows)", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlabel="PSI", title=f"Input drift ({report.num_drift_rows} rows)")

    ax = axes[1, 1]
    ax.plot([0, 1], [0, 1], color="0.5", lw=1)
    for i, (site, cal) in enumerate(report.calibration.items()):
        ax.errorbar(cal.levels, cal.coverage, yerr=k * cal.coverage_se, fmt="o-", color=f"C{i}", capsize=3,
                    label=f"{site} ({cal.num_rows} outcomes)")
    if report.calibration:
        ax.legend(loc="upper left", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no outcome feedback", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="nominal coverage", ylabel="observed coverage",
           title=f"Live coverage (± {k:g} SE)")
    fig.suptitle(f"Monitoring of '{report.model}' version {report.version}")
    return fig
