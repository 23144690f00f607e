"""Held-out data for calibration and recalibration: outcomes matched to an observed site, the
rows' inputs turned into model arguments as ``Posterior.predict`` turns them, and the posterior
predictive draws of the new rows, chunk by chunk."""

from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np

from ..data import as_array, check_seed, prepare_predict_inputs
from ..errors import InputError
from ..runtime import precision

__all__ = ["heldout_data", "split_outcomes", "predictive_chunks"]


def heldout_data(post, args: tuple, kwargs: Mapping, y, site: str | None,
                 owner: str) -> tuple[str, np.ndarray, tuple, dict]:
    """Outcomes and model arguments of held-out rows given as ``Posterior.predict`` takes them.

    Models built by bayesinf (formula models) take a DataFrame, turned into model arguments by
    the model's ``__bayesinf_arguments__`` hook exactly as at predict (``new_groups=`` included).
    Their outcomes default to the frame's column named like the observed site (the response
    column), and ``y`` may name a column of the frame.

    Returns
    -------
    site : str
    outcomes : np.ndarray
        ``(rows,)``, in the dtype the model was fit with.
    args, kwargs
        The model's row arguments, for ``predictive_chunks``.
    """
    to_arguments = getattr(post.model, "__bayesinf_arguments__", None)
    frame = _frame_of(args, kwargs) if to_arguments is not None else None
    if frame is not None:
        y = _outcomes_in_frame(post, frame, y, kwargs, owner)
    elif isinstance(y, str):
        raise InputError("y", f"is a column name ({y!r}), but the inputs are not the DataFrame of a formula model",
                         "the held-out outcomes as an array, e.g. y=y_test")
    site, outcomes, kwargs = split_outcomes(post, y, kwargs, site, owner)
    if to_arguments is not None:
        args, kwargs = to_arguments(*args, **kwargs)
    return site, outcomes, tuple(args), dict(kwargs)


def _frame_of(args: tuple, kwargs: Mapping):
    """The DataFrame of a ``predict(frame)`` or ``predict(data=frame)`` call, else None."""
    import pandas as pd

    if len(args) == 1 and isinstance(args[0], pd.DataFrame):
        return args[0]
    if not args and isinstance(kwargs.get("data"), pd.DataFrame):
        return kwargs["data"]
    return None


def _outcomes_in_frame(post, frame, y, kwargs: Mapping, owner: str):
    """``y`` with a column name resolved, or by default the frame's columns named like observed sites."""
    observed_args = dict(post.sites.observed_args)
    if isinstance(y, str):
        if y not in frame.columns:
            raise InputError("y", f"names column {y!r}, which the data does not have",
                             f"one of {[str(c) for c in frame.columns]}")
        return as_array(y, frame[y])[0]
    if y is not None or any(a in kwargs for a in observed_args.values()):
        return y
    found = {s: as_array(s, frame[s])[0] for s in observed_args if s in frame.columns}
    if not found:
        raise InputError("y", f"of {owner} is missing", f"the held-out outcomes: y=... or a column named "
                         f"{' or '.join(repr(s) for s in observed_args)} in the data")
    return found


def split_outcomes(post, y, kwargs: Mapping, site: str | None, owner: str) -> tuple[str, np.ndarray, dict]:
    """Find the outcomes to score and the observed site they belong to.

    Outcomes come as ``y=`` (an array when the model has one observed site, or a dict
    site -> array) or under the model's own observed argument name in ``kwargs`` (``kidscore=...``).

    Returns
    -------
    site : str
    outcomes : np.ndarray
        ``(rows,)``, in the dtype the model was fit with.
    kwargs : dict
        ``kwargs`` without observed arguments (the row inputs left for prediction).
    """
    observed_args = dict(post.sites.observed_args)  # site -> argument
    arg_to_site = {a: s for s, a in observed_args.items()}
    kwargs = dict(kwargs)
    given: dict[str, object] = {}
    for name in list(kwargs):
        if name in arg_to_site:
            given[arg_to_site[name]] = kwargs.pop(name)
    if y is not None:
        if isinstance(y, Mapping):
            for s, v in y.items():
                if s not in observed_args:
                    raise InputError("y", f"names site '{s}', which is not an observed site of the model",
                                     f"keys among {list(observed_args)}")
                given[s] = v
        elif len(observed_args) == 1:
            given[next(iter(observed_args))] = y
        else:
            raise InputError("y", f"is one array but the model observes {list(observed_args)}",
                             "a dict site -> outcomes", f"Pass y={{'{next(iter(observed_args))}': ...}}.")
    if not given:
        raise InputError("y", f"of {owner} is missing", "the held-out outcomes, e.g. y=y_test")
    if site is None:
        if len(given) > 1:
            raise InputError("site", f"of {owner} is needed: outcomes were given for {list(given)}",
                             "one of them")
        site = next(iter(given))
    elif site not in given:
        raise InputError("site", f"'{site}' of {owner} has no outcomes", f"one of {list(given)}")
    if post.sites.row_event_size.get(site, 1) != 1:
        raise InputError("site", f"'{site}' has {post.sites.row_event_size[site]} values per row",
                         "a site with one value per row (scalar outcomes)")
    outcomes, _ = as_array(site if y is None else "y", given[site])
    outcomes = outcomes.reshape(outcomes.shape[0], -1) if outcomes.ndim > 1 else outcomes
    if outcomes.ndim != 1:
        if outcomes.shape[1] != 1:
            raise InputError("y", f"has shape {outcomes.shape}", "one outcome per row, shape (rows,)")
        outcomes = outcomes[:, 0]
    fit_dtype = post.data[observed_args[site]].dtype
    return site, outcomes.astype(fit_dtype, copy=False), kwargs


def predictive_chunks(post, args: tuple, kwargs: Mapping, site: str, outcomes: np.ndarray, seed: int,
                      owner: str, log_lik: bool = False) -> Iterator[tuple[int, int, np.ndarray, np.ndarray | None]]:
    """Predictive draws of ``site`` at the new rows, chunk by chunk.

    Yields ``(start, stop, row_draws, log_lik)`` with ``row_draws`` ``(stop - start, draws)`` and,
    when ``log_lik`` is asked for and computable, the log likelihood of the outcomes under each
    posterior draw, ``(stop - start, draws)`` (else None).
    """
    seed = check_seed(seed, owner)
    num_rows, arrays, static = prepare_predict_inputs(post.model, post.schema, post.data, args, kwargs)
    if outcomes.shape[0] != num_rows:
        raise InputError("y", f"has {outcomes.shape[0]} rows but the inputs have {num_rows}",
                         "one outcome per input row")
    predictor = post.predict_fn()
    if static != predictor.model.static:
        changed = [k for k in static if static[k] != predictor.model.static.get(k)]
        raise InputError(changed[0], "differs from the value the model was fit with",
                         f"{predictor.model.static.get(changed[0])!r}")
    ll_fn = _log_lik_fn(post, site) if log_lik and not post.sites.row_latent else None
    obs_arg = post.sites.observed_args[site]
    row_args = set(post.schema.names("rows"))
    with precision(post.dtype):
        for start, stop, out in predictor.chunks(arrays, num_rows, seed):
            row_draws = np.ascontiguousarray(out[site].reshape(out[site].shape[0], stop - start).T)
            ll = None
            if ll_fn is not None:
                part = {k: (v[start:stop] if k in row_args else v) for k, v in arrays.items()}
                part[obs_arg] = outcomes[start:stop]
                ll = ll_fn(part)
            yield start, stop, row_draws, ll


def _log_lik_fn(post, site: str):
    """``arrays -> (rows, draws)`` log likelihood of ``site`` under every posterior draw.

    Only ``site`` is conditioned on outcomes; the model's other observed sites are sampled (their
    arguments are None), so the model runs under a fixed seed. Their draws do not enter the
    result unless ``site``'s distribution depends on another observed site's value.
    """
    import jax
    from numpyro import handlers
    from numpyro.infer.util import log_likelihood

    from ..inference.binding import BoundModel

    model = handlers.seed(BoundModel(post.model, post.schema.static), rng_seed=0)
    flat = post.flat_draws(post.sites.latent)
    compiled = jax.jit(lambda d, a: log_likelihood(model, d, **a)[site])

    def fn(arrays):
        out = np.asarray(compiled(flat, arrays))
        return out.reshape(out.shape[0], -1).T
    return fn
