"""Process-level JAX set-up: host devices for parallel CPU chains, the persistent compilation
cache, and the float32/float64 choice.

``configure_host_devices`` runs when ``bayesinf`` is imported, because XLA reads the host device
count once, when JAX first initializes its CPU backend. It only sets the ``XLA_FLAGS`` environment
variable; it imports nothing and changes nothing if the user already chose a count.
"""

from __future__ import annotations

import contextlib
import os

__all__ = [
    "configure_host_devices",
    "enable_compilation_cache",
    "precision",
    "key_data",
    "DTYPES",
]

DTYPES = ("float32", "float64")
_DEVICE_FLAG = "--xla_force_host_platform_device_count"
#: Fewest CPU devices provided, so the default 4 chains run in parallel even on a 2-core machine
#: (the OS interleaves them; measured faster than running them one after another or in lock-step).
MIN_HOST_DEVICES = 4


def configure_host_devices(count: int | None = None) -> int | None:
    """Ask XLA for ``count`` CPU devices (default: ``max(os.cpu_count(), 4)``).

    Has an effect only before JAX initializes its backends. The environment variable
    ``BAYESINF_HOST_DEVICES`` overrides the default; ``0`` leaves ``XLA_FLAGS`` untouched.
    Returns the count requested, or None when the user's own setting was kept.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if _DEVICE_FLAG in flags:
        return None
    env = os.environ.get("BAYESINF_HOST_DEVICES")
    if count is None and env is not None:
        count = int(env)
        if count == 0:
            return None
    if count is None:
        count = max(os.cpu_count() or 1, MIN_HOST_DEVICES)
    os.environ["XLA_FLAGS"] = f"{flags} {_DEVICE_FLAG}={count}".strip()
    return count


def enable_compilation_cache(path: str | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache so a new process reuses compiled samplers.

    Uses ``path``, else ``$BAYESINF_CACHE_DIR``, else ``~/.cache/bayesinf/xla``. Keeps a cache
    directory the user configured; ``BAYESINF_CACHE_DIR=off`` disables it. Returns the directory.
    """
    import jax

    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    path = path or os.environ.get("BAYESINF_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "bayesinf", "xla"
    )
    if path.lower() == "off":
        return None
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return path


def precision(dtype: str):
    """Context in which JAX computes in ``dtype`` (``"float32"`` or ``"float64"``)."""
    import jax

    if dtype not in DTYPES:
        from .errors import InputError

        raise InputError("dtype", f"must be one of {DTYPES}; got {dtype!r}")
    if dtype == "float64":
        return jax.enable_x64(True)
    return contextlib.nullcontext()


def key_data(seed: int):
    """``jax.random.PRNGKey(seed)`` as a ``(2,)`` uint32 numpy array, for seeds in [0, 2**32),
    without running (and compiling) JAX's seeding on the host."""
    import numpy as np

    seed = int(seed)
    return np.array([(seed >> 32) & 0xFFFFFFFF, seed & 0xFFFFFFFF], dtype=np.uint32)
