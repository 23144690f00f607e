"""Input drift: live input columns against the training-input statistics saved with a model.

Per feature (input column) two numbers, from the store's training statistics (``percentiles``
0..100 and, for discrete columns, ``value_counts``; see ``bayesinf.store.describe_inputs``):

- **PSI**, the population stability index ``sum_b (a_b - e_b) log(a_b / e_b)`` over bins ``b``
  with live shares ``a_b`` and training shares ``e_b``: the training deciles for continuous
  columns (10 bins), the categories for discrete ones. Live shares are smoothed,
  ``(count + 0.5) / (n + 0.5 B)``, so an empty bin does not blow up. Usual reading: below 0.1
  stable, 0.1-0.2 moderate shift, above 0.2 major shift.
- **A two-sample test** of "same distribution as at training": Kolmogorov-Smirnov for continuous
  columns, Pearson chi-square on the (2 x categories) table of training and live counts for
  discrete ones. The KS statistic is computed against the training ECDF interpolated between its
  saved percentiles, which is within ``delta = 0.01 + 1 / n_train`` of the exact training ECDF;
  the p-value uses ``max(D - delta, 0)`` with the effective size ``n m / (n + m)``, so it is
  conservative (never smaller than the exact two-sample test's). Stores saved before percentiles
  were recorded get a chi-square test over the bins of their 1/5/25/50/75/95/99% quantiles.

A feature's ``status`` is "drift" when PSI > 0.2 *and* its test's p-value is below
``alpha / num_features`` (Bonferroni), "watch" when only one of PSI > 0.1 or that p-value
holds, else "stable". Without drift the chance that any feature of a report is flagged "drift"
is therefore at most ``alpha`` (1% by default); requiring PSI > 0.2 as well keeps very large
live samples from flagging shifts too small to matter.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["PSI_WATCH", "PSI_DRIFT", "ALPHA", "FeatureDrift", "psi", "ks_against_grid", "feature_drift",
           "input_drift"]

#: PSI above this is a moderate shift ("watch").
PSI_WATCH = 0.1
#: PSI above this is a major shift ("drift", with a significant test).
PSI_DRIFT = 0.2
#: Family-wise level of the drift tests of one report (Bonferroni over its features).
ALPHA = 0.01
#: Probabilities of the saved training percentiles.
GRID_PROBS = np.linspace(0.0, 1.0, 101)
_OLD_PROBS = np.array([0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0])


@dataclass(frozen=True)
class FeatureDrift:
    """Drift of one input column.

    Attributes
    ----------
    feature : str
        Column name, as in the store's training statistics (``"X[0]"``, ``"floor"``).
    kind : {"continuous", "categorical"}
    num_rows : int
        Live rows compared.
    num_train : int
        Training rows.
    live_mean, train_mean : float
        Means of the live and training values.
    psi : float
        Population stability index (NaN without live rows).
    test : {"ks", "chi2", "chi2-binned"}
        Two-sample test used.
    statistic, p_value : float
        The test's statistic and p-value.
    status : {"drift", "watch", "stable", "no data"}
    """

    feature: str
    kind: str
    num_rows: int
    num_train: int
    live_mean: float
    train_mean: float
    psi: float
    test: str
    statistic: float
    p_value: float
    status: str

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- statistics
def psi(live_counts: np.ndarray, expected_shares: np.ndarray) -> float:
    """Population stability index of live bin counts against expected (training) bin shares.

    Parameters
    ----------
    live_counts : np.ndarray
        Live rows per bin, ``(bins,)``.
    expected_shares : np.ndarray
        Training share per bin, ``(bins,)``, summing to 1 (floored at 1e-4).

    Returns
    -------
    float
        ``sum (a - e) log(a / e)`` with smoothed live shares ``a = (count + 0.5) / (n + 0.5 bins)``.
    """
    counts = np.asarray(live_counts, dtype=np.float64)
    e = np.maximum(np.asarray(expected_shares, dtype=np.float64), 1e-4)
    e = e / e.sum()
    a = (counts + 0.5) / (counts.sum() + 0.5 * counts.size)
    return float(np.sum((a - e) * np.log(a / e)))


def _grid_cdf(values: np.ndarray, probs: np.ndarray):
    """The training ECDF interpolated between quantiles ``values`` at ``probs`` (right-continuous
    at repeated values), as a function of ``x``."""
    uniq, last = np.unique(values[::-1], return_index=True)
    p = probs[::-1][last]  # the largest probability at each distinct value

    def cdf(x):
        return np.interp(x, uniq, p, left=0.0, right=1.0)

    return cdf


def ks_against_grid(x: np.ndarray, grid_values: np.ndarray, num_train: int,
                    grid_probs: np.ndarray = GRID_PROBS) -> tuple[float, float]:
    """Kolmogorov-Smirnov two-sample test of live values against a training sample known by its
    quantiles; conservative (see the module docstring).

    Parameters
    ----------
    x : np.ndarray
        Live values, ``(n,)``.
    grid_values : np.ndarray
        Training quantiles at ``grid_probs``, ``(k,)``.
    num_train : int
        Training rows ``m``.

    Returns
    -------
    (statistic, p_value)
        ``D`` (sup distance of the ECDFs, before the ``delta`` correction) and the p-value of
        ``max(D - delta, 0)`` under the Kolmogorov distribution of size ``n m / (n + m)``.
    """
    from scipy import stats

    x = np.sort(np.asarray(x, dtype=np.float64))
    n = x.size
    g = _grid_cdf(np.asarray(grid_values, dtype=np.float64), grid_probs)(x)
    i = np.arange(1, n + 1)
    d = float(max(np.max(i / n - g), np.max(g - (i - 1) / n)))
    delta = float(np.max(np.diff(grid_probs))) + 1.0 / max(num_train, 1)
    effective = max(1, int(round(n * num_train / (n + num_train))))
    return d, float(stats.kstwo.sf(max(d - delta, 0.0), effective))


#: Below this expected live count in some bin, the chi-square p-value is simulated (``MC_DRAWS``
#: tables, fixed seed) instead of read from the chi-square distribution, which is wrong for
#: small counts (it gave p = 2e-28 from 6 rows over 10 levels).
MIN_EXPECTED = 5.0
MC_DRAWS = 4999


def _chi2_two_sample(train_counts: np.ndarray, live_counts: np.ndarray) -> tuple[float, float]:
    """Pearson chi-square test of homogeneity of a (2 x bins) table; bins empty in both dropped.

    With small expected live counts the p-value is a Monte Carlo one: live tables drawn from the
    multinomial of the pooled shares (seed 0, so reports are reproducible), ``(1 + #{X >= x}) /
    (1 + MC_DRAWS)``."""
    from scipy import stats

    table = np.stack([np.asarray(train_counts, dtype=np.float64), np.asarray(live_counts, dtype=np.float64)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0
    result = stats.chi2_contingency(table, correction=False)
    shares = table.sum(axis=0) / table.sum()
    num_live = int(round(table[1].sum()))
    if (shares * num_live).min() >= MIN_EXPECTED:
        return float(result.statistic), float(result.pvalue)
    simulated = np.random.default_rng(0).multinomial(num_live, shares, size=MC_DRAWS).astype(np.float64)
    train = np.broadcast_to(table[0], simulated.shape)
    pooled = train + simulated
    total = pooled.sum(axis=1, keepdims=True)
    exp_train = pooled * (table[0].sum() / total)
    exp_live = pooled * (num_live / total)
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = np.nansum((train - exp_train) ** 2 / exp_train + (simulated - exp_live) ** 2 / exp_live, axis=1)
    p_value = (1 + int(np.sum(stat >= result.statistic - 1e-9))) / (1 + MC_DRAWS)
    return float(result.statistic), float(p_value)


def _status(psi_value: float, p_value: float, alpha: float) -> str:
    shifted, significant = psi_value > PSI_DRIFT, p_value < alpha
    if shifted and significant:
        return "drift"
    if psi_value > PSI_WATCH or significant:
        return "watch"
    return "stable"


# ----------------------------------------------------------------------------- per feature
def feature_drift(feature: str, stats: dict, values: np.ndarray, alpha: float = ALPHA) -> FeatureDrift:
    """Drift of one column given its training statistics (an entry of the store's
    ``inputs.arguments[arg].statistics``) and its live values ``(rows,)``; ``alpha`` is the
    per-feature test level (already divided by the number of features)."""
    counts = stats.get("value_counts")
    if counts and stats.get("mean") is None:  # text levels (a formula model's string factor)
        return _level_drift(feature, stats, counts, values, alpha)
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    num_train = int(stats["count"])
    counts = stats.get("value_counts")
    kind = "categorical" if counts else "continuous"
    base = dict(feature=feature, kind=kind, num_rows=int(x.size), num_train=num_train,
                live_mean=float(x.mean()) if x.size else float("nan"), train_mean=float(stats["mean"]))
    if x.size == 0:
        return FeatureDrift(**base, psi=float("nan"), test="ks" if kind == "continuous" else "chi2",
                            statistic=float("nan"), p_value=float("nan"), status="no data")
    if counts:
        keys = np.array([float(k) for k in counts])
        train = np.array(list(counts.values()), dtype=np.float64)
        unseen = np.setdiff1d(np.unique(x), keys)
        keys = np.concatenate([keys, unseen])
        train = np.concatenate([train, np.zeros(unseen.size)])
        order = np.argsort(keys)
        keys, train = keys[order], train[order]
        live = np.bincount(np.searchsorted(keys, x), minlength=keys.size).astype(np.float64)
        statistic, p_value = _chi2_two_sample(train, live)
        value = psi(live, train / train.sum())
        return FeatureDrift(**base, psi=value, test="chi2", statistic=statistic, p_value=p_value,
                            status=_status(value, p_value, alpha))
    if "percentiles" in stats:
        grid = np.asarray(stats["percentiles"], dtype=np.float64)
        cdf = _grid_cdf(grid, GRID_PROBS)
        edges = np.unique(grid[10:100:10])  # training deciles
        shares = np.diff(np.concatenate([[0.0], cdf(edges), [1.0]]))
        live = np.bincount(np.searchsorted(edges, x, side="left"), minlength=edges.size + 1)
        statistic, p_value = ks_against_grid(x, grid, num_train)
        value = psi(live, shares)
        return FeatureDrift(**base, psi=value, test="ks", statistic=statistic, p_value=p_value,
                            status=_status(value, p_value, alpha))
    # Older stores: the bins between the saved quantiles, with their known training shares.
    q = stats["quantiles"]
    knots = np.array([stats["min"], q["0.01"], q["0.05"], q["0.25"], q["0.5"], q["0.75"], q["0.95"], q["0.99"],
                      stats["max"]], dtype=np.float64)
    edges = knots[1:-1]
    shares = np.diff(_OLD_PROBS[1:-1], prepend=0.0, append=1.0)
    live = np.bincount(np.searchsorted(edges, x, side="left"), minlength=edges.size + 1)
    statistic, p_value = _chi2_two_sample(shares * num_train, live)
    value = psi(live, shares)
    return FeatureDrift(**base, psi=value, test="chi2-binned", statistic=statistic, p_value=p_value,
                        status=_status(value, p_value, alpha))


def _level_drift(feature: str, stats: dict, counts: dict, values, alpha: float) -> FeatureDrift:
    """Drift of a column of text levels: chi-square and PSI over the levels (unseen ones added)."""
    live_levels = np.asarray(values).astype(str).ravel()
    keys = list(counts) + sorted(set(live_levels.tolist()) - set(counts))
    position = {k: i for i, k in enumerate(keys)}
    train = np.array([counts.get(k, 0) for k in keys], dtype=np.float64)
    live = np.bincount([position[v] for v in live_levels], minlength=len(keys)).astype(np.float64)
    base = dict(feature=feature, kind="categorical", num_rows=int(live_levels.size), num_train=int(stats["count"]),
                live_mean=float("nan"), train_mean=float("nan"))
    if live_levels.size == 0:
        return FeatureDrift(**base, psi=float("nan"), test="chi2", statistic=float("nan"), p_value=float("nan"),
                            status="no data")
    statistic, p_value = _chi2_two_sample(train, live)
    value = psi(live, train / train.sum())
    return FeatureDrift(**base, psi=value, test="chi2", statistic=statistic, p_value=p_value,
                        status=_status(value, p_value, alpha))


def _columns(values: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    flat = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    if flat.shape[1] != len(names):
        return {}
    return {name: flat[:, j] for j, name in enumerate(names)}


def input_drift(arguments: dict, live_inputs: dict[str, np.ndarray], alpha: float = ALPHA) -> list[FeatureDrift]:
    """Drift of every input column of a model.

    Parameters
    ----------
    arguments : dict
        The store's ``metadata["inputs"]["arguments"]``: per row argument, its per-column
        ``statistics``.
    live_inputs : dict of str -> np.ndarray
        Live values per row argument, ``(rows, ...)``.
    alpha : float
        Family-wise level: each feature's test is run at ``alpha / num_features``.

    Returns
    -------
    list of FeatureDrift
        One per column, in the order of the training statistics.
    """
    features = [(arg, col, st) for arg, entry in arguments.items() for col, st in entry["statistics"].items()]
    level = alpha / max(len(features), 1)
    out = []
    for arg, entry in arguments.items():
        names = list(entry["statistics"])
        values = live_inputs.get(arg)
        if values is not None and len(values) and np.asarray(values).dtype.kind not in "biuf":
            columns = {names[0]: np.asarray(values)} if len(names) == 1 else {}  # text levels
        else:
            columns = _columns(values, names) if values is not None and len(values) else {}
        for name in names:
            out.append(feature_drift(name, entry["statistics"][name], columns.get(name, np.empty(0)), level))
    return out
