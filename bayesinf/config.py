"""Frozen, validated settings for the inference drivers.

A settings object is hashable: it is part of the key under which compiled samplers are cached,
so two fits with equal settings and equal data shapes share one compilation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from .errors import InputError

__all__ = ["NUTSConfig", "SVIConfig", "INIT_STRATEGIES", "SVI_INIT_STRATEGIES", "INIT_MASS_MATRICES", "CHAIN_METHODS", "GUIDES",
           "OPTIMIZERS"]

INIT_STRATEGIES = ("uniform", "median", "mean", "sample", "feasible", "map", "svi")
#: Strategies that first run a quick SVI fit and start the chains from it (see ``NUTSConfig``).
SVI_INIT_STRATEGIES = ("map", "svi")
#: Initial (inverse) mass matrices of the NUTS warmup (see ``NUTSConfig.init_mass_matrix``).
INIT_MASS_MATRICES = ("identity", "gradient")
CHAIN_METHODS = ("parallel", "vectorized")
GUIDES = ("normal", "mvn", "lowrank", "laplace")
OPTIMIZERS = ("adam", "clipped_adam", "adagrad", "sgd", "rmsprop")


def _check_int(owner: str, name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(name, f"of {owner} must be an int >= {minimum}; got {value!r}")


def _check_prob(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise InputError(name, f"of {owner} must be a float in (0, 1); got {value!r}")


@dataclass(frozen=True)
class NUTSConfig:
    """Settings of a NUTS fit (NumPyro's ``NUTS`` kernel driven by bayesinf).

    Attributes
    ----------
    chains, draws, warmup : int
        Number of chains, kept draws per chain and warmup (adaptation) iterations per chain.
    target_accept : float
        Target mean acceptance probability of the step-size adaptation, in (0, 1).
    dense_mass : bool
        Adapt a dense (full covariance) mass matrix instead of a diagonal one.
    max_tree_depth : int
        Maximum tree depth; a trajectory has at most ``2**max_tree_depth - 1`` leapfrog steps.
    init : str or callable
        Initial-position strategy: one of ``INIT_STRATEGIES`` or a NumPyro init strategy callable.
        ``"map"``: a quick MAP fit (SVI with ``AutoLaplaceApproximation``), then one draw per chain
        from the Laplace approximation around it (the mode jittered on the posterior's own scale;
        ``"svi"``'s draws instead when the mode is degenerate, with a singular Hessian);
        ``"svi"``: one draw per chain from a quick mean-field normal SVI fit. The others are
        NumPyro's ``init_to_*`` strategies.
    adapt_mass_matrix : bool
        Adapt the mass matrix during warmup (Stan's windowed scheme). A warm start from a previous
        posterior turns it off and keeps the mass matrix estimated from that posterior's draws.
    init_mass_matrix : {"identity", "gradient"}
        Diagonal inverse mass matrix the warmup starts from (it is replaced when the first mass
        matrix window ends). ``"identity"``: NumPyro's default. ``"gradient"``: per chain, from the
        potential's gradient at the chain's initial point (unconstrained space): ``1 / |grad|``, a
        variance estimate as nutpie starts from, with its log spread shrunk by the part the
        unknown distance to the mode explains (see ``bayesinf.inference.nuts``), clipped to
        ``[1e-4, 1e4]``; the step size is then searched for it. It saves warmup leapfrog steps
        when posterior scales differ by orders of magnitude (radon varying intercepts: -27%) and
        is about neutral otherwise. Ignored by a warm start with a given mass matrix; with
        ``dense_mass`` it sets the diagonal.
    chain_method : {"parallel", "vectorized"}
        ``"parallel"``: chains spread over the devices (on CPU, the host devices bayesinf
        configures, one per core), vectorized within a device when there are more chains than
        devices. ``"vectorized"``: every chain on one device, in lock-step; each step costs the
        deepest tree among the chains, but the gradient is one batched computation (on CPU, a
        data-heavy likelihood such as a ``(rows, features) @ (features, chains)`` product reads
        the data once for all chains). A GPU or TPU has one device, where both are the same.
        On CPU, a process started with one host device (``BAYESINF_HOST_DEVICES=1``) gives that
        device the whole thread pool: 12% faster than ``"vectorized"`` among four host devices on
        a logistic regression of 10,000 x 20 (``docs/benchmarks.md``).
    """

    chains: int = 4
    draws: int = 1000
    warmup: int = 1000
    target_accept: float = 0.8
    dense_mass: bool = False
    max_tree_depth: int = 10
    init: str | Callable = "uniform"
    adapt_mass_matrix: bool = True
    init_mass_matrix: str = "identity"
    chain_method: str = "parallel"

    def __post_init__(self):
        owner = "NUTS settings"
        _check_int(owner, "chains", self.chains, 1)
        _check_int(owner, "draws", self.draws, 1)
        _check_int(owner, "warmup", self.warmup, 0)
        _check_prob(owner, "target_accept", self.target_accept)
        _check_int(owner, "max_tree_depth", self.max_tree_depth, 1)
        for name in ("dense_mass", "adapt_mass_matrix"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(name, f"of {owner} must be a bool; got {getattr(self, name)!r}")
        if self.init_mass_matrix not in INIT_MASS_MATRICES:
            raise InputError("init_mass_matrix", f"of {owner} must be one of {INIT_MASS_MATRICES}; "
                                                 f"got {self.init_mass_matrix!r}")
        if self.chain_method not in CHAIN_METHODS:
            raise InputError("chain_method", f"of {owner} must be one of {CHAIN_METHODS}; got {self.chain_method!r}")
        if isinstance(self.init, str) and self.init not in INIT_STRATEGIES:
            raise InputError("init", f"of {owner} must be one of {INIT_STRATEGIES} or a callable; got {self.init!r}")

    def replace(self, **changes) -> "NUTSConfig":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class SVIConfig:
    """Settings of an SVI fit.

    Attributes
    ----------
    guide : str or callable
        ``"normal"`` (AutoNormal, mean field), ``"mvn"`` (AutoMultivariateNormal), ``"lowrank"``
        (AutoLowRankMultivariateNormal), ``"laplace"`` (AutoLaplaceApproximation), or a guide
        function written by the user.
    optimizer : str
        One of ``OPTIMIZERS``.
    learning_rate : float
        Step size of the optimizer.
    num_steps : int
        Maximum number of optimization steps.
    draws : int
        Number of posterior draws sampled from the fitted guide.
    num_particles : int
        Monte Carlo samples per ELBO estimate.
    check_every : int
        Steps per compiled chunk; convergence is checked at the end of each chunk.
    rtol : float
        Relative tolerance of the stopping rule (see ``bayesinf.inference.svi``); 0 disables early stopping.
    rank : int or None
        Rank of the low-rank guide (default: NumPyro's, about sqrt of the number of parameters).
    """

    guide: str | Callable = "mvn"
    optimizer: str = "adam"
    learning_rate: float = 0.01
    num_steps: int = 20_000
    draws: int = 4000
    num_particles: int = 1
    check_every: int = 1000
    rtol: float = 1e-4
    rank: int | None = None

    def __post_init__(self):
        owner = "SVI settings"
        if isinstance(self.guide, str) and self.guide not in GUIDES:
            raise InputError("guide", f"of {owner} must be one of {GUIDES} or a guide callable; got {self.guide!r}")
        if self.optimizer not in OPTIMIZERS:
            raise InputError("optimizer", f"of {owner} must be one of {OPTIMIZERS}; got {self.optimizer!r}")
        if isinstance(self.learning_rate, bool) or not isinstance(self.learning_rate, (int, float)) or not self.learning_rate > 0:
            raise InputError("learning_rate", f"of {owner} must be a positive float; got {self.learning_rate!r}")
        _check_int(owner, "num_steps", self.num_steps, 1)
        _check_int(owner, "draws", self.draws, 1)
        _check_int(owner, "num_particles", self.num_particles, 1)
        _check_int(owner, "check_every", self.check_every, 1)
        if not isinstance(self.rtol, (int, float)) or self.rtol < 0:
            raise InputError("rtol", f"of {owner} must be a float >= 0; got {self.rtol!r}")
        if self.rank is not None:
            _check_int(owner, "rank", self.rank, 1)

    def replace(self, **changes) -> "SVIConfig":
        return dataclasses.replace(self, **changes)
