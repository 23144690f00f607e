"""Saving and loading a ``Posterior``: arrays in ``arrays.npz`` (loaded with
``allow_pickle=False``), everything else in ``manifest.json`` with the sha256 of every file.

Nothing is unpickled or evaluated. The model function is found again by the import path
``module:qualname`` recorded at save time, or given to ``load(path, model=...)``. A model built
by bayesinf (a formula model, say) instead describes itself: its ``__bayesinf_spec__()`` returns
``{"builder": "bayesinf.<module>:<callable>", "spec": <JSON>}``, saved in the manifest, and
``load`` rebuilds the model by calling the builder, which must live inside the ``bayesinf``
package, on the spec. Writes go to a
temporary directory beside the target, are fsynced, then renamed into place, so a crash never
leaves a half-written model under the target name.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib
import json
import os
import platform
import re
import shutil
import uuid
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from .data import InputSchema
from .errors import InputError, ModelFileError
from .sites import ModelSites

__all__ = ["save", "load", "FORMAT", "FORMAT_VERSION", "import_model"]

FORMAT = "bayesinf.posterior"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ARRAYS = "arrays.npz"
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def package_versions() -> dict:
    """Versions of Python and of the packages a saved file depends on (None where not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("bayesinf", "numpyro", "jax", "jaxlib", "numpy", "arviz"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def fsync_path(path: Path) -> None:
    """Flush a file or directory to disk (a directory after a rename into it); no-op where it cannot open."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to an ``.npz`` file at ``path`` and flush it to disk."""
    with open(path, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())


def _check_static_json(static: dict) -> None:
    for k, v in static.items():
        try:
            json.dumps(v)
        except TypeError:
            raise InputError(k, f"is a static model argument of type {type(v).__name__}, which cannot be saved",
                             "numbers, strings, booleans, None or tuples of them") from None


@contextlib.contextmanager
def atomic_directory(path, manifest_name: str, what: str):
    """Write a model directory atomically: yields a temporary directory beside ``path``; on success
    it is fsynced and renamed to ``path`` (replacing a model saved there before); on error it is
    removed. Refuses (``InputError``) to replace anything at ``path`` but a directory holding
    ``manifest_name`` or an empty directory, so a save never deletes other files."""
    path = Path(path)
    if path.exists() and not (path.is_dir() and ((path / manifest_name).is_file() or not any(path.iterdir()))):
        raise InputError("path", f"'{path}' exists and is not {what} directory, so save will not replace it",
                         hint="Choose a new path, or remove it first.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        yield tmp
        fsync_path(tmp)
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex}"
            os.replace(path, old)
        os.replace(tmp, path)
        fsync_path(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


#: Storage precisions of posterior draws: ``float16`` (11-bit significand, largest 65504) and
#: ``bfloat16`` (8-bit significand, float32's range; npz has no bfloat16, so its bits are stored
#: as ``uint16`` and the manifest records the encoding). Both load as float32.
DRAWS_DTYPES = ("float16", "bfloat16")


def encode_draws(name: str, values: np.ndarray, draws_dtype: str | None) -> tuple[np.ndarray, str | None]:
    """``values`` as stored with ``draws_dtype``, and the encoding to record (None: stored as is).

    Integer draws (discrete sites) are never reduced. Raises ``InputError`` naming the site when
    a value does not fit the storage type (overflow, or a nonzero value that would become 0).
    """
    if draws_dtype is None or not np.issubdtype(values.dtype, np.floating):
        return values, None
    if draws_dtype not in DRAWS_DTYPES:
        raise InputError("draws_dtype", f"must be one of {DRAWS_DTYPES} or None; got {draws_dtype!r}")
    import ml_dtypes

    target = np.float16 if draws_dtype == "float16" else ml_dtypes.bfloat16
    with np.errstate(over="ignore", under="ignore"):
        stored = values.astype(target)
    wide = stored.astype(np.float32)
    lost = (np.isfinite(values) & ~np.isfinite(wide)) | ((values != 0) & (wide == 0))
    if lost.any():
        where = tuple(int(i) for i in np.argwhere(lost)[0])
        raise InputError(f"draws['{name}']", f"has value {values[where]!r} at {where}, which {draws_dtype} cannot "
                         f"hold (largest {float(ml_dtypes.finfo(target).max):.4g}, "
                         f"smallest {float(ml_dtypes.finfo(target).smallest_subnormal):.3g})",
                         hint="Save with draws_dtype='bfloat16' (float32's range) or None.")
    return (stored.view(np.uint16), "bfloat16") if draws_dtype == "bfloat16" else (stored, "float16")


def decode_draws(values: np.ndarray, encoding: str | None) -> np.ndarray:
    """Inverse of ``encode_draws``: float32 draws from stored 16-bit values."""
    if encoding is None:
        return values
    if encoding == "bfloat16" and values.dtype == np.uint16:
        return (values.astype(np.uint32) << 16).view(np.float32)
    if encoding == "float16" and values.dtype == np.float16:
        return values.astype(np.float32)
    raise ValueError(f"array of dtype {values.dtype} does not match its recorded encoding {encoding!r}")


def save(posterior, path, draws_dtype: str | None = None) -> Path:
    """Write ``posterior`` to the directory ``path`` atomically; an existing model there is replaced.

    ``draws_dtype`` ("float16", "bfloat16" or None) is the storage precision of the posterior
    draws (see ``DRAWS_DTYPES``); data and sampler statistics keep theirs.

    Raises ``InputError`` if ``path`` exists and is neither a model directory (with
    ``manifest.json``) nor an empty directory, for an unknown ``draws_dtype`` or a draw it
    cannot hold.
    """
    path = Path(path)
    _check_static_json(posterior.schema.static)
    if draws_dtype is not None and draws_dtype not in DRAWS_DTYPES:
        raise InputError("draws_dtype", f"must be one of {DRAWS_DTYPES} or None; got {draws_dtype!r}")
    arrays, encodings = {}, {}
    for k, v in posterior.draws.items():
        arrays[f"posterior/{k}"], encoding = encode_draws(k, np.asarray(v), draws_dtype)
        if encoding is not None:
            encodings[f"posterior/{k}"] = encoding
    arrays.update({f"sample_stats/{k}": v for k, v in posterior.sample_stats.items()})
    arrays.update({f"data/{k}": v for k, v in posterior.data.items()})
    if posterior.losses is not None:
        arrays["losses"] = posterior.losses
    with atomic_directory(path, MANIFEST, "a bayesinf model") as tmp:
        write_npz(tmp / ARRAYS, arrays)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "versions": package_versions(),
            "model": posterior.model_path,
            "model_spec": _model_spec(posterior.model),
            "method": posterior.method,
            "dtype": posterior.dtype,
            "seed": posterior.seed,
            "settings": posterior.settings,
            "info": _plain_info(posterior.info),
            "schema": posterior.schema.to_json(),
            "sites": posterior.sites.to_json(),
            "draws_dtype": draws_dtype,
            "arrays": {k: {"shape": list(v.shape), "dtype": v.dtype.str,
                           **({"encoding": encodings[k]} if k in encodings else {})} for k, v in arrays.items()},
            "files": {ARRAYS: sha256_file(tmp / ARRAYS)},
        }
        with open(tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
    return path


_SCALARS = (int, float, str, bool, type(None))


#: Records of ``Posterior.info`` kept on save besides its scalar facts (their scalar fields, nested).
_INFO_RECORDS = ("compression", "lineage")


def _plain_info(info) -> dict:
    """The JSON-safe part of ``Posterior.info``: scalar facts, and the ``_INFO_RECORDS``."""
    def plain(record: dict) -> dict:
        return {k: plain(v) if isinstance(v, dict) else v for k, v in record.items()
                if isinstance(v, _SCALARS) or isinstance(v, dict)}

    out = {k: v for k, v in info.items() if isinstance(v, _SCALARS)}
    out.update({k: plain(info[k]) for k in _INFO_RECORDS if isinstance(info.get(k), dict)})
    return out


def _model_spec(model) -> dict | None:
    describe = getattr(model, "__bayesinf_spec__", None)
    if describe is None:
        return None
    spec = describe()
    if not str(spec.get("builder", "")).startswith("bayesinf."):
        raise InputError("model", f"describes itself with builder {spec.get('builder')!r}",
                         "a builder inside the bayesinf package")
    json.dumps(spec)  # must be plain JSON
    return spec


def import_model(import_path: str) -> Callable:
    """Import the model function named ``module:qualname`` (no code from the file is evaluated)."""
    if not isinstance(import_path, str) or not _IMPORT_PATH.match(import_path):
        raise ValueError(f"invalid model import path {import_path!r}")
    module_name, qualname = import_path.split(":")
    if module_name == "__main__":
        raise ValueError("the model was defined in a script or notebook (__main__)")
    obj = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{import_path} is not callable")
    return obj


def read_json_manifest(path, manifest_name: str, fmt: str, version: int, what: str) -> dict:
    """Read ``path/manifest_name``, check its ``format``/``format_version`` and the sha256 of every
    file it lists under ``files``; errors name the file at fault. ``what`` names the kind of model."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(path, "no such file or directory")
    if not path.is_dir():
        raise ModelFileError(path, f"not a bayesinf model directory (expected a directory with {manifest_name})")
    manifest_path = path / manifest_name
    if not manifest_path.is_file():
        raise ModelFileError(manifest_path, f"missing; this is not a directory of {what}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(manifest_path, f"corrupt JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ModelFileError(manifest_path, f"not {what} (format {found!r})")
    if manifest.get("format_version") != version:
        raise ModelFileError(manifest_path, f"format version {manifest.get('format_version')!r} is not supported "
                             f"(this bayesinf reads version {version})")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ModelFileError(manifest_path, "lists no checksummed files")
    for name, digest in files.items():
        parts = Path(name).parts
        if not parts or Path(name).is_absolute() or "\\" in name or any(p.startswith(".") for p in parts):
            raise ModelFileError(manifest_path, f"lists an invalid file name {name!r}")
        file = path / name
        if not file.is_file():
            raise ModelFileError(file, "missing")
        if sha256_file(file) != digest:
            raise ModelFileError(file, "checksum mismatch: the file was modified or corrupted after saving")
    return manifest


def read_manifest(path) -> dict:
    """Read and check a saved posterior's ``manifest.json`` and the checksums of its files."""
    manifest = read_json_manifest(path, MANIFEST, FORMAT, FORMAT_VERSION, "a bayesinf posterior")
    if ARRAYS not in manifest["files"]:
        raise ModelFileError(Path(path) / MANIFEST, "lists no checksummed array file")
    return manifest


def load(path, model: Callable | None = None):
    """Load a ``Posterior`` saved with ``Posterior.save``.

    Parameters
    ----------
    path : str or Path
        The model directory.
    model : callable, optional
        The model function; by default imported from the path recorded at save time.

    Raises
    ------
    ModelFileError
        The directory is missing, not a bayesinf model, corrupt or tampered with, or the model
        function cannot be found.
    """
    from .posterior import Posterior

    path = Path(path)
    manifest = read_manifest(path)
    try:
        with np.load(path / ARRAYS, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except ValueError as exc:
        raise ModelFileError(path / ARRAYS, f"unreadable arrays ({exc})") from None
    except Exception as exc:
        raise ModelFileError(path / ARRAYS, f"corrupt array file ({type(exc).__name__}: {exc})") from None
    try:
        for k, meta in manifest.get("arrays", {}).items():
            if k in arrays and isinstance(meta, dict) and meta.get("encoding") is not None:
                arrays[k] = decode_draws(arrays[k], meta["encoding"])
    except ValueError as exc:
        raise ModelFileError(path / MANIFEST, f"invalid array encoding ({exc})") from None
    if model is None and manifest.get("model_spec") is not None:
        spec = manifest["model_spec"]
        try:
            if not isinstance(spec, dict) or not str(spec.get("builder", "")).startswith("bayesinf."):
                raise ValueError(f"builder {spec.get('builder') if isinstance(spec, dict) else spec!r} "
                                 "is not inside the bayesinf package")
            model = import_model(spec["builder"])(spec["spec"])
        except Exception as exc:
            raise ModelFileError(path / MANIFEST, f"cannot rebuild the model from its saved spec ({exc})") from None
    if model is None:
        try:
            model = import_model(manifest.get("model"))
        except Exception as exc:
            raise ModelFileError(path, f"cannot find the model function {manifest.get('model')!r} ({exc}); make its "
                                 "module importable (e.g. on PYTHONPATH) or pass it as load(path, model=...)") from None
    try:
        schema = InputSchema.from_json(manifest["schema"])
        sites = ModelSites.from_json(manifest["sites"])
        group = lambda prefix: {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        posterior = Posterior(
            model=model, method=manifest["method"], draws=group("posterior/"), sample_stats=group("sample_stats/"),
            schema=schema, data=group("data/"), sites=sites, settings=manifest["settings"], info=manifest["info"],
            dtype=manifest["dtype"], seed=int(manifest["seed"]), losses=arrays.get("losses"),
            model_path=manifest.get("model"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(path / MANIFEST, f"incomplete or invalid manifest ({type(exc).__name__}: {exc})") from None
    check_model_matches(posterior, path)
    return posterior


def check_model_matches(posterior, path) -> None:
    """Raise ``ModelFileError`` unless ``posterior.model``, traced on the saved data, has exactly the
    saved draws' latent sites with their shapes. An edited or different model function would
    otherwise draw its unknown latent sites from their priors at predict time, silently. Skipped
    when no data was saved (nothing to trace the model on)."""
    if not posterior.data:
        return
    from .inference.binding import BoundModel
    from .runtime import precision
    from .sites import inspect_model

    try:
        with precision(posterior.dtype):
            sites, trace = inspect_model(BoundModel(posterior.model, posterior.schema.static), posterior.data)
    except Exception as exc:
        raise ModelFileError(path, f"the model function does not run on the saved data ({type(exc).__name__}: "
                                   f"{exc}); pass the model it was fit with as load(path, model=...)") from None
    saved = {k: tuple(np.shape(posterior.draws[k])[2:]) for k in posterior.sites.latent}
    found = {k: tuple(np.shape(trace[k]["value"])) for k in sites.latent}
    if saved != found:
        problems = []
        if set(saved) - set(found):
            problems.append(f"it lacks the saved latent sites {sorted(set(saved) - set(found))}")
        if set(found) - set(saved):
            problems.append(f"its latent sites {sorted(set(found) - set(saved))} have no saved draws")
        problems += [f"its site '{k}' has shape {found[k]}, the saved draws {saved[k]}"
                     for k in sorted(set(saved) & set(found)) if saved[k] != found[k]]
        raise ModelFileError(path, f"the model function does not match the saved draws: {'; '.join(problems)}. "
                                   "Pass the model it was fit with as load(path, model=...)")
