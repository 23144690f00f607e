"""Minibatch SVI driver: NumPyro's ``SVI`` on one batch of rows per step, the likelihood scaled by
the model's subsampling plate, run in compiled chunks of steps over batches stacked ahead of time.

The model convention: the data rows sit in ``numpyro.plate(name, num_rows,
subsample_size=batch_size)``. NumPyro scales the log likelihood of sites in such a plate by
``num_rows / batch_size``, so the ELBO of one batch is an unbiased estimate of the full-data ELBO.
The driver substitutes the plate's subsample indices with the source row numbers of the batch
(NumPyro would otherwise draw random indices, at a cost linear in ``num_rows`` on CPU), and refuses
a model whose observed sites are not scaled that way.

Optimisation: the learning rate decays geometrically from ``learning_rate`` to ``learning_rate *
lr_decay`` over ``num_steps``, and the fitted guide parameters are the Polyak-Ruppert average of
the iterates over the last ``average`` fraction of the steps run ("tail averaging"): with
minibatch noise the iterates fluctuate around the optimum, and their average is a far better
estimate than the last one (Polyak & Juditsky 1992; Jain et al. 2018, "Parallelizing stochastic
gradient descent for least squares regression: mini-batching, averaging, and model
misspecification"). The stopping rule of ``bayesinf.inference.svi.has_converged``, applied to
consecutive chunks of minibatch losses, either stops the fit (``stop_early``) or is reported.

Guide scales: under subsampling, the reparameterised gradient of a guide scale carries the full
subsampling noise of the data gradient, while its signal (the curvature that sets the posterior
sd) shrinks relative to that noise like ``sqrt(batch_size / num_rows)``, so without help the
scales settle only after very many steps when ``num_rows`` is large. For the mean-field guide
(``"normal"``, the default) the loss carries a control variate that removes this noise (see
``_control_variate_elbo``); the other guides use NumPyro's plain ``Trace_ELBO``. The Gaussian
guides start at scale ``min(0.1, 1 / sqrt(num_rows))``, the order of the posterior sd of a
parameter that every row informs.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from ..config import SVIConfig
from ..errors import InputError
from .binding import BoundModel, shape_key
from .cache import ProgramCache
from .svi import SVIResult, _make_guide, has_converged

__all__ = ["run_minibatch_svi", "Subsampled", "check_scaling", "learning_rate_schedule"]

_CACHE_SIZE = 8
_PROGRAMS = ProgramCache(_CACHE_SIZE)  # compiled programs


def _plate_rows(rows, num_rows: int, batch_size: int) -> Callable:
    """``substitute_fn`` giving the subsampling plate over the data rows the batch's row numbers."""
    def fn(msg):
        if msg["type"] == "plate" and tuple(msg["args"]) == (num_rows, batch_size):
            return rows
        return None
    return fn


class Subsampled:
    """``model`` run on one batch: called with the batch's row numbers (``_rows``) and arrays,
    its plate of size ``num_rows`` subsampled to ``batch_size`` takes those row numbers."""

    def __init__(self, model: Callable, num_rows: int, batch_size: int, pass_rows: bool = False):
        self.model, self.num_rows, self.batch_size, self.pass_rows = model, num_rows, batch_size, pass_rows

    def __call__(self, _rows, **arrays):
        from numpyro import handlers

        with handlers.substitute(substitute_fn=_plate_rows(_rows, self.num_rows, self.batch_size)):
            return self.model(_rows=_rows, **arrays) if self.pass_rows else self.model(**arrays)

    def _key(self):
        return (self.model, self.num_rows, self.batch_size, self.pass_rows)

    def __eq__(self, other):
        return isinstance(other, Subsampled) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())


def check_scaling(model: Subsampled, batch: Mapping[str, Any], observed: tuple[str, ...]) -> None:
    """Raise ``InputError`` unless every observed site of ``model`` on ``batch`` has its log
    likelihood scaled by ``num_rows / batch_size`` (it sits in the subsampling plate)."""
    from numpyro import handlers

    trace = handlers.trace(handlers.seed(model, 0)).get_trace(**batch)
    expected = model.num_rows / model.batch_size
    for name in observed:
        scale = trace[name]["scale"]
        scale = 1.0 if scale is None else float(np.asarray(scale))
        if not math.isclose(scale, expected, rel_tol=1e-6):
            raise InputError("model", f"scales the log likelihood of site '{name}' by {scale:g}, not by "
                             f"num_rows / batch_size = {model.num_rows} / {model.batch_size}",
                             "the observed site inside numpyro.plate(..., num_rows or X.shape[0], "
                             "subsample_size=X.shape[0])",
                             "See docs/big_data.md for the model convention.")


def learning_rate_schedule(learning_rate: float, lr_decay: float, num_steps: int) -> Callable:
    """Step size at step ``t``: ``learning_rate * lr_decay ** (t / num_steps)`` (geometric decay)."""
    import jax.numpy as jnp

    rate = math.log(lr_decay) / num_steps
    return lambda t: learning_rate * jnp.exp(rate * t)


def _make_guide_scaled(config: SVIConfig, model: "Subsampled", init_scale: float):
    """The guide of ``config``; the Gaussian autoguides start at scale ``init_scale``."""
    from numpyro.infer import autoguide

    if config.guide == "normal":
        return autoguide.AutoNormal(model, init_scale=init_scale)
    if config.guide == "mvn":
        return autoguide.AutoMultivariateNormal(model, init_scale=init_scale)
    if config.guide == "lowrank":
        return autoguide.AutoLowRankMultivariateNormal(model, rank=config.rank, init_scale=init_scale)
    return _make_guide(config, model, model.model.static)  # the Laplace guide or a user's guide


def _control_variate_elbo(num_particles: int, prefix: str = "auto"):
    """``Trace_ELBO`` for an ``AutoNormal`` guide with a control variate on the scale gradients.

    With ``u = loc + scale * eps`` the guide's unconstrained draw and ``f`` the model's log joint
    on the unconstrained space, the reparameterised gradient of ``E f(u)`` with respect to
    ``scale`` is ``eps * grad f(u)``, which carries all the subsampling noise of ``grad f``. We
    subtract ``c = stop_gradient(grad f(loc)) . (u - loc)``: ``E c = 0`` (``E eps = 0``), so the
    loss stays unbiased, ``c`` has no gradient with respect to ``loc``, and its gradient with
    respect to ``scale``, ``eps * grad f(loc)``, cancels the noise that ``grad f(u)`` shares
    with ``grad f(loc)``, leaving about ``eps * scale * eps * hess f``: a low-noise estimate of
    the curvature term that sets the posterior sd (Miller et al. 2017, "Reducing
    reparameterization gradient variance", use the same linearisation).
    """
    import jax
    import jax.numpy as jnp
    from jax import random
    from numpyro import handlers
    from numpyro.distributions.transforms import biject_to
    from numpyro.infer import Trace_ELBO
    from numpyro.infer.util import potential_energy

    class ControlVariateELBO(Trace_ELBO):
        def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
            out = super().loss_with_mutable_state(rng_key, param_map, model, guide, *args, **kwargs)
            autoguide = guide.model
            locs = {name: param_map[f"{name}_{prefix}_loc"] for name in autoguide._init_locs}
            grad = jax.grad(lambda u: -potential_energy(model, args, kwargs, u))(jax.lax.stop_gradient(locs))
            grad = jax.lax.stop_gradient(grad)
            # the draws the ELBO used: Trace_ELBO seeds the guide with the second half of each
            # particle's key
            keys = random.split(rng_key, self.num_particles) if self.num_particles > 1 else rng_key[None]

            def term(key):
                guide_seed = random.split(key)[1]
                trace = handlers.trace(handlers.seed(handlers.substitute(guide, data=param_map), guide_seed)).get_trace(
                    *args, **kwargs)
                total = 0.0
                for name, loc in locs.items():
                    site = autoguide.prototype_trace[name]
                    u = biject_to(site["fn"].support).inv(trace[name]["value"])
                    total = total + jnp.sum(grad[name] * (u - loc))
                return total

            correction = jnp.mean(jax.vmap(term)(keys))
            return {"loss": out["loss"] + correction, "mutable_state": out["mutable_state"]}

    return ControlVariateELBO(num_particles=num_particles)


def _make_optimizer(name: str, step_size: Callable):
    from numpyro import optim

    return {"adam": optim.Adam, "clipped_adam": optim.ClippedAdam, "adagrad": optim.Adagrad,
            "sgd": optim.SGD, "rmsprop": optim.RMSProp}[name](step_size)


@dataclass
class _Program:
    svi: Any
    guide: Any
    chunk: Callable


def _get_program(model: Subsampled, batch, extra, config: SVIConfig, lr_decay: float, init_scale: float, dtype: str):
    import jax
    import jax.numpy as jnp
    from jax import lax
    from numpyro.infer import SVI, Trace_ELBO

    compile_config = dataclasses.replace(config, draws=1, rtol=0.0)  # num_steps stays: it sets the schedule
    key = (model, shape_key(batch), shape_key(extra), compile_config, lr_decay, init_scale, dtype,
           jax.default_backend())
    program = _PROGRAMS.get(key)
    if program is not None:
        return program, True
    inner = _make_guide_scaled(config, model, init_scale)
    # An autoguide traces ``model`` (which takes ``_rows``); a user's guide takes the data only.
    guide = Subsampled(inner, model.num_rows, model.batch_size, pass_rows=not isinstance(inner, BoundModel))
    schedule = learning_rate_schedule(config.learning_rate, lr_decay, config.num_steps)
    elbo = (_control_variate_elbo(config.num_particles) if config.guide == "normal"
            else Trace_ELBO(num_particles=config.num_particles))
    svi = SVI(model, guide, _make_optimizer(config.optimizer, schedule), elbo)

    def chunk(state, batches, extra):
        """One step per leading index of ``batches``; returns the state, the losses and the mean
        unconstrained parameters over the chunk."""
        def step(carry, batch):
            state, total = carry
            state, loss = svi.update(state, **batch, **extra)
            total = jax.tree.map(jnp.add, total, svi.optim.get_params(state.optim_state))
            return (state, total), loss

        zero = jax.tree.map(jnp.zeros_like, svi.optim.get_params(state.optim_state))
        (state, total), losses = lax.scan(step, (state, zero), batches)
        return state, losses, jax.tree.map(lambda t: t / losses.shape[0], total)

    program = _Program(svi, guide, jax.jit(chunk))
    _PROGRAMS.put(key, program)
    return program, False


def run_minibatch_svi(model: Subsampled, first: Mapping[str, Any], prefetcher, extra: Mapping[str, np.ndarray],
                      config: SVIConfig, seed: int, *, latent_sites: tuple[str, ...], lr_decay: float = 0.03,
                      init_scale: float = 0.1, average: float = 0.5, stop_early: bool = False, dtype: str = "float32",
                      progress: bool = False) -> SVIResult:
    """Fit ``config.guide`` by minibatch SVI on the chunks of ``prefetcher``; draw ``config.draws``.

    Parameters
    ----------
    model : Subsampled
        The model, its static arguments bound (``num_rows`` among them).
    first : mapping of str -> array
        The first chunk of ``config.check_every`` batches, ``(check_every, batch_size, ...)`` per
        field (and ``_rows``), on the device.
    prefetcher : bayesinf.sources.Prefetcher
        The following chunks.
    extra : mapping of str -> array
        The model's other array arguments (not row-wise), passed to every step.
    config : SVIConfig
        ``num_steps`` (most steps), ``check_every`` (steps per compiled chunk), ``rtol`` (of the
        stopping rule) and the guide, optimizer, learning rate, draws and particles.
    seed : int
    latent_sites : tuple of str
        Latent sample sites, the ones drawn from the guide.
    lr_decay : float
        Final learning rate as a fraction of ``config.learning_rate``.
    init_scale : float
        Initial scale of the Gaussian autoguides (see the module docstring).
    average : float
        Fraction of the steps run, the last ones, over which the iterates are averaged.
    stop_early : bool
        Stop when the stopping rule holds; otherwise run ``num_steps`` and record in
        ``info["converged"]`` whether the rule held over the last two chunks.
    """
    import jax
    import jax.numpy as jnp
    from numpyro.infer import Predictive

    start = time.perf_counter()
    batch = {k: v[0] for k, v in first.items()}
    extra = {k: jnp.asarray(v) for k, v in extra.items()}
    program, cached = _get_program(model, batch, extra, config, lr_decay, init_scale, dtype)
    init_key, draw_key = jax.random.split(jax.random.PRNGKey(seed))
    # ``svi.init`` stays un-jitted, as in ``bayesinf.inference.svi``: an autoguide records its
    # prototype trace on first call.
    state = program.svi.init(init_key, **batch, **extra)
    compiled_at = time.perf_counter()
    losses, means = [], []
    converged = False
    num_chunks = -(-config.num_steps // config.check_every)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_chunks * config.check_every, desc="minibatch SVI", unit="step")
    chunk = first
    first_done = None
    try:
        for k in range(num_chunks):
            if k:
                chunk = prefetcher.get()
            state, chunk_losses, chunk_mean = program.chunk(state, chunk, extra)
            chunk_losses = np.asarray(chunk_losses)
            if first_done is None:
                first_done = time.perf_counter()  # the first chunk includes compilation
            losses.append(chunk_losses)
            means.append(chunk_mean)
            if bar is not None:
                bar.update(chunk_losses.size)
                bar.set_postfix_str(f"loss {chunk_losses.mean():.4g}")
            if not np.all(np.isfinite(chunk_losses)):
                converged = False
                break
            converged = k >= 1 and has_converged(losses[-2], losses[-1], config.rtol)
            if converged and stop_early:
                break
    finally:
        if bar is not None:
            bar.close()
    run_at = time.perf_counter()
    tail = means[-max(1, math.ceil(average * len(means))):]
    mean = jax.tree.map(lambda *xs: sum(xs) / len(xs), *tail)
    params = program.svi.constrain_fn(mean)
    if hasattr(program.guide.model, "sample_posterior"):  # an autoguide
        sample = Subsampled(lambda **kw: program.guide.model.sample_posterior(
            draw_key, params, sample_shape=(config.draws,), **kw), model.num_rows, model.batch_size, True)
        draws = sample(**batch, **extra)
    else:
        draws = Predictive(program.guide, params=params, num_samples=config.draws)(draw_key, **batch, **extra)
    draws = {k: np.asarray(v)[None] for k, v in draws.items() if k in latent_sites}
    losses = np.concatenate(losses)
    info = {
        "num_steps": int(losses.size),
        "converged": converged,
        "is_finite": bool(np.all(np.isfinite(losses))),
        "averaged_steps": int(len(tail) * config.check_every),
        "total_seconds": time.perf_counter() - start,
        "setup_seconds": compiled_at - start,
        "first_chunk_seconds": first_done - compiled_at,
        "run_seconds": run_at - compiled_at,
        "steady_steps": int(losses.size - config.check_every),
        "steady_seconds": run_at - first_done,
        "io_wait_seconds": prefetcher.wait_seconds,
        "cached_program": cached,
        "backend": jax.default_backend(),
    }
    return SVIResult(draws, losses, {k: np.asarray(v) for k, v in params.items()}, info)
