"""Peers benchmark: bayesinf against raw NumPyro, PyMC and nutpie on the same three models, in one run.

Models (written identically in NumPyro, ``peers_jax.py``, and PyMC, ``peers_pymc.py``; the data
are written once to ``.npz`` files that every worker reads):

- ``eight_schools``: eight schools, non-centred (``bi.datasets.load_eight_schools()``);
- ``radon``: varying intercepts, non-centred, log_radon ~ floor + county (919 rows, 85 counties,
  ``bi.datasets.load_radon()``);
- ``logistic``: logistic regression, 10,000 rows x 20 predictors simulated with a fixed seed.

Tools: ``bayesinf`` (``bi.fit(method="nuts")``, JAX's persistent cache off, so it compiles from
scratch), ``bayesinf-disk-cache`` (the same with the persistent cache filled by an earlier
process), ``numpyro`` (``MCMC(NUTS(model))`` defaults: one CPU device, chains in sequence),
``numpyro-parallel`` (``set_host_device_count(4)``, ``chain_method="parallel"``), ``pymc``
(``pm.sample(cores=2)``), ``nutpie`` (``nutpie.compile_pymc_model``, default numba backend). PyMC
and nutpie run in their own environment, ``benchmarks/.peers-venv`` (``--setup`` makes it).

Every measurement is a fresh process (a worker) that fits twice:

- ``first``: wall time from the call that starts fitting (model construction, compilation,
  warmup and sampling) to the draws in hand as numpy arrays; imports and data loading excluded;
- ``second``: a second fit in the same process, same data and shapes, new seed (bayesinf:
  ``bi.fit`` again, its compiled sampler cached; NumPyro: ``mcmc.run`` again on the same ``MCMC``;
  PyMC: ``pm.sample`` again on the same model, which rebuilds its compiled function; nutpie:
  ``nutpie.sample`` again on the compiled model). Warmup and sampling, without compilation.

Min bulk ESS over all latent parameters (constrained space) is computed here, in the project's
environment, by ``bayesinf.arviz_io`` for every tool alike, from the draws each fit returned. ESS/s
divides each fit's own min ESS by its wall time. Reported: medians over ``--repeats`` processes
per model and tool (tools interleaved within each repeat), the ratios of bayesinf's median ESS/s
to each peer's and to the best peer's, and the median over repeats of the same ratios taken
within one repeat (robust to a machine load that changes between repeats).

Before the timed repeats one untimed run per model fills the on-disk caches the tools keep
between processes as their users would have them: PyTensor's compiled C modules (PyMC, nutpie)
and, for ``bayesinf-disk-cache`` only, JAX's persistent compilation cache.

Usage::

    python benchmarks/peers.py --setup                      # once: makes benchmarks/.peers-venv
    python benchmarks/peers.py --repeats 3 --out peers.json # all models and tools, markdown table
    python benchmarks/peers.py --report peers.json          # the table again (also of an unfinished run)
    python benchmarks/peers.py --models eight_schools --tools bayesinf,numpyro \\
        --chains 1024 --chain-method vectorized             # many vectorized chains (GPU)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS_VENV = os.path.join(HERE, ".peers-venv")
#: Versions of the peers' environment, found to install and run together on Python 3.12.
PEERS_PINS = ("pymc==6.4.0", "pytensor==3.3.8", "nutpie==0.16.11", "numba==0.68.0")
MODELS = ("eight_schools", "radon", "logistic")
JAX_TOOLS = ("bayesinf", "bayesinf-disk-cache", "numpyro", "numpyro-parallel")
PEER_TOOLS = ("pymc", "nutpie")
TOOLS = JAX_TOOLS + PEER_TOOLS
DEFAULT_TOOLS = ("bayesinf", "numpyro", "numpyro-parallel", "pymc", "nutpie")
#: The simulated logistic regression: rows, predictors, seed.
LOGISTIC_ROWS, LOGISTIC_PREDICTORS, LOGISTIC_SEED = 10_000, 20, 20_261_123
#: Environment as this process found it, before ``import bayesinf`` set XLA_FLAGS in it.
_ENV = dict(os.environ)


# ----------------------------------------------------------------------------- data
def write_data(model: str, folder: str) -> str:
    """Write the arrays of ``model`` to ``folder/model.npz``; returns the path."""
    import numpy as np

    import bayesinf as bi

    if model == "eight_schools":
        frame = bi.datasets.load_eight_schools().frame
        arrays = {"y": frame["y"].to_numpy(float), "sigma": frame["sigma"].to_numpy(float)}
    elif model == "radon":
        frame = bi.datasets.load_radon().frame
        arrays = {"county": frame["county"].to_numpy(np.int64), "floor": frame["floor"].to_numpy(float),
                  "log_radon": frame["log_radon"].to_numpy(float),
                  "num_counties": np.asarray(frame["county"].nunique())}
    elif model == "logistic":
        rng = np.random.default_rng(LOGISTIC_SEED)
        X = rng.standard_normal((LOGISTIC_ROWS, LOGISTIC_PREDICTORS))
        beta = rng.normal(0.0, 0.5, LOGISTIC_PREDICTORS)
        logits = -0.5 + X @ beta
        y = (rng.random(LOGISTIC_ROWS) < 1.0 / (1.0 + np.exp(-logits))).astype(np.int64)
        arrays = {"X": X, "y": y}
    else:
        raise ValueError(f"unknown model {model!r}; choose from {MODELS}")
    path = os.path.join(folder, f"{model}.npz")
    np.savez(path, **arrays)
    return path


# ----------------------------------------------------------------------------- environments
def peers_python() -> str:
    return os.path.join(PEERS_VENV, "bin", "python")


def setup() -> None:
    """Create ``benchmarks/.peers-venv`` with PyMC and nutpie at the pinned versions."""
    if not os.path.exists(peers_python()):
        subprocess.run([sys.executable, "-m", "venv", PEERS_VENV], check=True)
    subprocess.run([peers_python(), "-m", "pip", "install", *PEERS_PINS], check=True)
    subprocess.run([peers_python(), "-c", "import pymc, nutpie; print('pymc', pymc.__version__, "
                                          "'nutpie', nutpie.__version__)"], check=True)


def worker_env(tool: str, args, cache_dir: str) -> dict:
    env = dict(_ENV)
    env.pop("XLA_FLAGS", None)  # each JAX tool chooses its own devices
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    if tool == "bayesinf":
        env["BAYESINF_CACHE_DIR"] = "off"
    elif tool == "bayesinf-disk-cache":
        env["BAYESINF_CACHE_DIR"] = cache_dir
    if tool.startswith("bayesinf") and args.chain_method == "vectorized":
        env["BAYESINF_HOST_DEVICES"] = "1"  # all chains vmapped on one device
    return env


def run_worker(tool: str, model: str, data: str, out: str, args, cache_dir: str, *, fits: int = 2,
               draws: int | None = None, warmup: int | None = None) -> dict:
    """Run one fresh worker process; returns its result dict (with ``process_seconds``)."""
    common = ["--tool", tool, "--model", model, "--data", data, "--out", out, "--chains", str(args.chains),
              "--draws", str(draws or args.draws), "--warmup", str(args.warmup if warmup is None else warmup),
              "--fits", str(fits)]
    if tool in PEER_TOOLS:
        if not os.path.exists(peers_python()):
            raise SystemExit(f"{PEERS_VENV} is missing: run `python benchmarks/peers.py --setup` first")
        command = [peers_python(), os.path.join(HERE, "peers_pymc.py"), *common, "--cores", str(args.cores)]
    else:
        command = [sys.executable, os.path.join(HERE, "peers_jax.py"), *common]
        if args.chain_method:
            command += ["--chain-method", args.chain_method]
        if args.bayesinf_settings and tool.startswith("bayesinf"):
            command += ["--bayesinf-settings", args.bayesinf_settings]
    t0 = time.perf_counter()
    proc = subprocess.run(command, env=worker_env(tool, args, cache_dir), capture_output=True, text=True,
                          timeout=args.timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} on {model} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    with open(os.path.join(out, "result.json")) as f:
        result = json.load(f)
    result["process_seconds"] = time.perf_counter() - t0
    return result


# ----------------------------------------------------------------------------- ESS
def ess_and_rhat(path: str) -> tuple[float, float]:
    """Min bulk ESS and max R-hat over every scalar latent parameter of the draws in ``path``."""
    import numpy as np

    from bayesinf import arviz_io

    with np.load(path) as f:
        draws = {k: f[k].astype(np.float64) for k in f.files}
    table = arviz_io.summary(arviz_io.to_datatree(draws), level=0.9, kind="eti")
    return float(table["ess_bulk"].min()), float(table["r_hat"].max())


def measure(result: dict, out: str) -> dict:
    """Flat per-run metrics of one worker result."""
    ess1, rhat1 = ess_and_rhat(os.path.join(out, "draws.npz"))
    ess2, rhat2 = ess_and_rhat(os.path.join(out, "draws_second.npz"))
    first, second = result["first"], result["second"]
    row = {
        "first_seconds": result["first_seconds"],
        "second_seconds": result["second_seconds"],
        "import_seconds": result["import_seconds"],
        "process_seconds": result["process_seconds"],
        "min_ess_bulk": ess1,
        "min_ess_bulk_second": ess2,
        "max_r_hat": max(rhat1, rhat2),
        "ess_per_second_first": ess1 / result["first_seconds"],
        "ess_per_second_second": ess2 / result["second_seconds"],
        "divergences": first["divergences"],
        "divergences_second": second["divergences"],
        "leapfrog_per_draw": first["leapfrog_per_draw"],
        "tree_depth": first["tree_depth"],
        "step_size": first["step_size"],
        "seconds_per_1000_leapfrog_second": 1000 * result["second_seconds"] / max(second["leapfrog_total"], 1),
    }
    for key in ("first_block_seconds", "sampling_seconds", "warmup_leapfrog_total"):
        if key in result.get("first_info", {}):
            row[f"first_{key}"] = result["first_info"][key]
        if key in result.get("second_info", {}):
            row[f"second_{key}"] = result["second_info"][key]
    return row


# ----------------------------------------------------------------------------- report
def medians(runs: list[dict]) -> dict:
    keys = [k for k in runs[0] if all(k in r for r in runs)]
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def ratios(med: dict, runs: dict | None = None) -> dict:
    """ESS/s of bayesinf (and of bayesinf-disk-cache) over each peer's and over the best peer's, per
    model, with and without compilation (> 1: bayesinf is faster): ratios of the medians, and, with
    ``runs``, the median over repeats of the ratio within each repeat (robust to a load that
    changes between repeats)."""
    if runs is not None:
        per_repeat = []
        count = min(len(rows) for tools in runs.values() for rows in tools.values() if rows)
        for r in range(count):
            one = {model: {tool: rows[r] for tool, rows in tools.items() if len(rows) > r}
                   for model, tools in runs.items()}
            per_repeat.append(ratios(one))
        out = ratios(med)
        for model, ours in out.items():
            for name, peers in ours.items():
                for peer, row in peers.items():
                    for key in ("with_compilation", "without_compilation"):
                        row[f"{key}_per_repeat"] = statistics.median(p[model][name][peer][key] for p in per_repeat)
        return out
    out = {}
    for model, tools in med.items():
        peers = {t: m for t, m in tools.items() if not t.startswith("bayesinf")}
        if not peers:
            continue
        for ours in (t for t in tools if t.startswith("bayesinf")):
            mine = tools[ours]
            rows = {peer: {key: mine[f"ess_per_second_{which}"] / m[f"ess_per_second_{which}"]
                           for key, which in (("with_compilation", "first"), ("without_compilation", "second"))}
                    for peer, m in peers.items()}
            rows["best peer"] = {
                key: mine[f"ess_per_second_{which}"] / max(m[f"ess_per_second_{which}"] for m in peers.values())
                for key, which in (("with_compilation", "first"), ("without_compilation", "second"))}
            rows["best peer"]["best_with_compilation"] = max(peers, key=lambda p: peers[p]["ess_per_second_first"])
            rows["best peer"]["best_without_compilation"] = max(peers,
                                                                key=lambda p: peers[p]["ess_per_second_second"])
            out.setdefault(model, {})[ours] = rows
    return out


def markdown(med: dict, rat: dict, meta: dict) -> str:
    lines = [f"Medians of {meta['repeats']} fresh processes per model and tool; {meta['chains']} chains x {meta['draws']} draws after "
             f"{meta['warmup']} warmup; load average {meta['load_before']} (before), {meta.get('load_after', '-')} (after).",
             "",
             "| model | tool | fit incl. compile (s) | fit, compiled (s) | min ESS bulk | ESS/s incl. compile "
             "| ESS/s compiled | divergences | leapfrog/draw | step size | max R-hat |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for model, tools in med.items():
        for tool, m in tools.items():
            lines.append(f"| {model} | {tool} | {m['first_seconds']:.2f} | {m['second_seconds']:.2f} | "
                         f"{m['min_ess_bulk']:.0f} | {m['ess_per_second_first']:,.0f} | "
                         f"{m['ess_per_second_second']:,.0f} | {m['divergences']:.0f} | "
                         f"{m['leapfrog_per_draw']:.1f} | {m['step_size']:.3f} | {m['max_r_hat']:.3f} |")
    if rat:
        lines += ["", "ESS/s of bayesinf over the peer's (> 1: bayesinf is faster): ratio of the medians above, "
                  "and in brackets the median over repeats of the ratio within one repeat:", "",
                  "| model | bayesinf | peer | incl. compile | compiled |", "|---|---|---|---:|---:|"]
        for model, ours in rat.items():
            for name, peers in ours.items():
                for peer, r in peers.items():
                    label = peer if peer != "best peer" else (
                        f"best peer ({r['best_with_compilation']} / {r['best_without_compilation']})")
                    per = {k: f" ({r[k + '_per_repeat']:.2f})" if k + "_per_repeat" in r else ""
                           for k in ("with_compilation", "without_compilation")}
                    lines.append(f"| {model} | {name} | {label} | {r['with_compilation']:.2f}{per['with_compilation']} | "
                                 f"{r['without_compilation']:.2f}{per['without_compilation']} |")
    return "\n".join(lines)


def _tools(text: str) -> tuple[str, ...]:
    tools = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in tools if t not in TOOLS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown tools {bad}; choose from {TOOLS}")
    return tools


def _models(text: str) -> tuple[str, ...]:
    models = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in models if m not in MODELS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown models {bad}; choose from {MODELS}")
    return models


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup", action="store_true", help=f"create {PEERS_VENV} and exit")
    parser.add_argument("--models", type=_models, default=MODELS, help="comma-separated: " + ",".join(MODELS))
    parser.add_argument("--tools", type=_tools, default=DEFAULT_TOOLS, help="comma-separated: " + ",".join(TOOLS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="write runs, medians and ratios as JSON here")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--chain-method", choices=("vectorized",), default=None,
                        help="JAX tools: all chains vectorized on one device (e.g. --chains 1024 on a GPU)")
    parser.add_argument("--cores", type=int, default=2, help="PyMC and nutpie worker processes/threads")
    parser.add_argument("--bayesinf-settings", default=None, help='JSON bi.fit options, e.g. \'{"dense_mass": true}\'')
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per worker process")
    parser.add_argument("--keep", default=None, help="keep data and draws in this folder")
    parser.add_argument("--report", default=None, help="print the table of a results JSON (also a partial one)")
    args = parser.parse_args(argv)
    if args.setup:
        setup()
        return
    if args.report:
        with open(args.report) as f:
            saved = json.load(f)
        counts = sorted({len(rows) for tools in saved["runs"].values() for rows in tools.values() if rows})
        saved["meta"]["repeats"] = "-".join(map(str, sorted({counts[0], counts[-1]})))
        print(markdown(*_write(None, saved["meta"], saved["runs"])))
        return
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")

    work = args.keep or tempfile.mkdtemp(prefix="bayesinf-peers-")
    os.makedirs(work, exist_ok=True)
    cache_dir = os.path.join(work, "jax-cache")
    meta = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]), "repeats": args.repeats,
            "chains": args.chains, "draws": args.draws, "warmup": args.warmup, "chain_method": args.chain_method,
            "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        data = {model: write_data(model, work) for model in args.models}
        for model in args.models:  # untimed: fill the caches each tool keeps on disk between processes
            for tool in args.tools:
                if tool in PEER_TOOLS or tool == "bayesinf-disk-cache":
                    out = os.path.join(work, f"warm-{model}-{tool}")
                    run_worker(tool, model, data[model], out, args, cache_dir, fits=1,
                               draws=args.draws if tool.startswith("bayesinf") else 20,
                               warmup=None if tool.startswith("bayesinf") else 20)
        runs = {model: {tool: [] for tool in args.tools} for model in args.models}
        for r in range(args.repeats):
            for model in args.models:
                for tool in args.tools:
                    out = os.path.join(work, f"r{r}-{model}-{tool}")
                    row = measure(run_worker(tool, model, data[model], out, args, cache_dir), out)
                    runs[model][tool].append(row)
                    if args.out:  # partial results survive an interrupted run
                        _write(args.out, meta, runs)
                    print(f"repeat {r} {model:13s} {tool:19s} first {row['first_seconds']:7.2f} s  second "
                          f"{row['second_seconds']:7.2f} s  min ESS {row['min_ess_bulk']:6.0f}  "
                          f"ESS/s {row['ess_per_second_first']:8.0f} / {row['ess_per_second_second']:8.0f}  "
                          f"div {row['divergences']}  load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    meta["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(markdown(*_write(args.out, meta, runs)))


def _write(path: str | None, meta: dict, runs: dict):
    """Medians and ratios of the runs so far; written as JSON to ``path`` when given."""
    med = {model: {tool: medians(rows) for tool, rows in tools.items() if rows} for model, tools in runs.items()}
    med = {model: tools for model, tools in med.items() if tools}
    rat = ratios(med, runs)
    if path:
        with open(path, "w") as f:
            json.dump({"meta": meta, "medians": med, "ratios": rat, "runs": runs}, f, indent=1)
    return med, rat, meta


if __name__ == "__main__":
    main()
