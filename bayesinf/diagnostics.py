"""Convergence verdicts for a fit, from ArviZ's summary table and the sampler statistics.

Thresholds (Vehtari et al. 2021, "Rank-normalization, folding, and localization"; Betancourt
2016 for E-BFMI): R-hat <= 1.01; bulk and tail ESS >= 100 per chain; no divergent transitions;
E-BFMI >= 0.3 in every chain. SVI fits are judged on their loss trace instead: finite, and
stopped by the convergence rule rather than by the step limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Diagnosis", "RHAT_MAX", "ESS_PER_CHAIN_MIN", "BFMI_MIN", "diagnose_nuts", "diagnose_svi"]

RHAT_MAX = 1.01
ESS_PER_CHAIN_MIN = 100
BFMI_MIN = 0.3


@dataclass(frozen=True)
class Diagnosis:
    """Verdict of a fit: ``ok`` is True when no check failed; ``problems`` explain each failure.

    ``checks`` holds the figures behind the verdict (e.g. ``r_hat_max``, ``ess_bulk_min``,
    ``divergences``, ``bfmi_min`` for NUTS; ``num_steps``, ``converged`` for SVI).
    """

    ok: bool
    method: str
    problems: tuple[str, ...]
    checks: dict

    def __str__(self):
        head = f"{self.method.upper()} fit: " + ("no problems found" if self.ok else f"{len(self.problems)} problem(s)")
        figures = ", ".join(f"{k}={_fmt(v)}" for k, v in self.checks.items())
        lines = [head, f"  {figures}"] + [f"  - {p}" for p in self.problems]
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle):
        printer.text(str(self))


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def diagnose_nuts(summary, stats: dict, bfmi: np.ndarray, num_chains: int) -> Diagnosis:
    """Verdict from an ArviZ summary DataFrame, sampler statistics and E-BFMI per chain."""
    problems = []
    checks = {}
    r_hat = summary["r_hat"].to_numpy(dtype=float)
    ess_bulk = summary["ess_bulk"].to_numpy(dtype=float)
    ess_tail = summary["ess_tail"].to_numpy(dtype=float)
    ess_min = ESS_PER_CHAIN_MIN * num_chains
    if num_chains > 1:
        checks["r_hat_max"] = float(np.nanmax(r_hat))
        bad = summary.index[r_hat > RHAT_MAX].tolist()
        if bad:
            problems.append(f"R-hat above {RHAT_MAX} for {_names(bad)}: chains disagree; run longer or reparameterize.")
    checks["ess_bulk_min"] = float(np.nanmin(ess_bulk))
    checks["ess_tail_min"] = float(np.nanmin(ess_tail))
    low = summary.index[(ess_bulk < ess_min) | (ess_tail < ess_min)].tolist()
    if low:
        problems.append(f"Effective sample size below {ess_min} ({ESS_PER_CHAIN_MIN} per chain) for {_names(low)}: "
                        "estimates are noisy; draw more.")
    divergences = int(np.sum(stats["diverging"]))
    checks["divergences"] = divergences
    if divergences:
        problems.append(f"{divergences} divergent transitions: the posterior may be biased; raise target_accept "
                        "or reparameterize (e.g. non-centered).")
    if bfmi.size:
        checks["bfmi_min"] = float(np.min(bfmi))
        if np.min(bfmi) < BFMI_MIN:
            problems.append(f"E-BFMI below {BFMI_MIN} in {int(np.sum(bfmi < BFMI_MIN))} chain(s): momentum resampling "
                            "explores the energy poorly; reparameterize.")
    if "tree_depth" in stats:
        checks["tree_depth_mean"] = float(np.mean(stats["tree_depth"]))
    return Diagnosis(not problems, "nuts", tuple(problems), checks)


def diagnose_svi(info: dict, losses: np.ndarray) -> Diagnosis:
    """Verdict of an SVI fit from its loss trace."""
    problems = []
    checks = {"num_steps": int(info.get("num_steps", losses.size)), "converged": bool(info.get("converged")),
              "final_loss": float(np.mean(losses[-100:])) if losses.size else float("nan")}
    if not np.all(np.isfinite(losses)):
        problems.append("The loss became NaN or infinite: lower the learning rate or check the model.")
    elif not info.get("converged"):
        problems.append("The loss was still decreasing at the step limit: raise num_steps or the learning rate.")
    return Diagnosis(not problems, "svi", tuple(problems), checks)


def _names(names, limit: int = 6) -> str:
    shown = ", ".join(map(str, names[:limit]))
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
