"""Portable predictors: a fitted posterior's compiled predictive function written with
``jax.export`` (StableHLO), loadable and callable in a process that has neither the model's code
nor NumPyro.

An exported predictor is a directory:

- ``predict.jax``: the serialized ``jax.export.Exported`` of the ``Predictor``'s jitted draw
  function, with a symbolic row dimension (a multiple of the Predictor's row block), so any row
  count runs without the model;
- ``draws.npz``: the posterior draws it is called with, and the fit's non-row array arguments;
- ``manifest.json``: inputs (names, dtypes, shapes with the symbolic dimension, value ranges),
  outputs, the jax/jaxlib versions and serialization versions it was written with, the
  platforms it was lowered for, and the sha256 of every file.

``load_predictor`` checks the checksums, deserializes (``jax.export.deserialize`` parses a
flatbuffer: nothing is unpickled or evaluated) and returns a ``PortablePredictor``, whose
``predict`` validates inputs against the manifest and draws through an ``ExportedPredictor``: a
``Predictor`` whose compiled function is the deserialized one, so chunking, row buckets (a new
row count compiles at most once per power-of-two bucket) and random keys are the Predictor's own.
Summaries come from ``bayesinf.prediction``. Same seed, same numbers as ``Posterior.predict`` on
the machine that exported it.

Compatibility: StableHLO written by jax ``v`` loads in jax releases that still support its
calling convention (``jax.export.minimum_supported_calling_convention_version``; jax keeps
about six months of backward compatibility), and needs no model code, NumPyro or GPU-specific
packages beyond a jaxlib for the target platform.

Formula models are not exported: their ``predict`` builds the design from a DataFrame by
evaluating the formula's terms, which a loaded predictor must not do (see ``_check_exportable``).
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .errors import InputError, ModelFileError
from .predictive import ROW_BLOCK, Predictor

__all__ = ["export", "load_predictor", "PortablePredictor", "ExportedPredictor", "FORMAT", "FORMAT_VERSION"]

FORMAT = "bayesinf.predictor"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FUNCTION = "predict.jax"
DRAWS = "draws.npz"
#: Platforms lowered for by default: a predictor exported on a CPU-only machine also runs on
#: NVIDIA GPUs. Models using an operation without a CUDA lowering here fall back to the
#: platform of this machine (recorded in the manifest).
DEFAULT_PLATFORMS = ("cpu", "cuda")
#: Platform names ``jax.export`` lowers for.
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
ROWS = "rows"


# ----------------------------------------------------------------------------- writing
#: Row counts of the two probe calls whose argument shapes define the symbolic row dimension: the
#: smallest bucket and the next one. They depend only on ``ROW_BLOCK``, never on the fit's rows.
PROBE_ROWS = (ROW_BLOCK, 2 * ROW_BLOCK)


def _probe_arrays(predictor: Predictor, arrays: Mapping[str, np.ndarray], num_rows: int) -> dict[str, np.ndarray]:
    """``arrays`` with every row argument replaced by its first row repeated ``num_rows`` times
    (only the shapes and dtypes of the probe calls matter, and the fit may have fewer rows)."""
    return {k: (np.repeat(np.asarray(v)[:1], num_rows, axis=0) if k in predictor.row_args else v)
            for k, v in arrays.items()}


def _probe_calls(predictor: Predictor, arrays: Mapping[str, np.ndarray], num_rows: int) -> list:
    """The arguments ``Predictor.chunks`` passes to the compiled function for ``num_rows`` rows.

    Runs ``chunks`` on a shallow copy whose function only records its arguments (and returns
    zeros of the right shapes, traced without compiling), so the export follows whatever the
    Predictor passes: draws, keys, row arrays. The copy may take up to ``num_rows`` rows per call
    whatever the memory budget: nothing is computed.
    """
    import jax

    calls = []
    probe = copy.copy(predictor)
    probe.max_rows = max(predictor.max_rows, num_rows)
    compiled = predictor.compiled

    def record(*args, **kwargs):
        calls.append((args, kwargs))
        shapes = jax.eval_shape(compiled, *args, **kwargs)
        return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)

    probe._fn = record
    for _ in probe.chunks(_probe_arrays(predictor, arrays, num_rows), num_rows, 0):
        pass
    return calls


def _symbolic_specs(small, large):
    """Shape specs from the arguments of two calls that differ only in their row count: axes
    whose length differs get the symbolic dimension ``k*row_blocks``, ``k`` the greatest common
    divisor of the lengths (``ROW_BLOCK`` for the probe calls of ``PROBE_ROWS``: the Predictor pads
    rows to whole blocks), so jax.export knows the row count is at least one block."""
    import math

    import jax
    from jax import export as jax_export

    pairs = []
    jax.tree.map(lambda a, b: pairs.append((np.shape(a), np.shape(b))), small, large)
    lengths = {(x, y) for a, b in pairs for x, y in zip(a, b) if x != y}
    if not lengths:
        raise ValueError("no argument of the predictive function depends on the row count")
    block = math.gcd(*{v for pair in lengths for v in pair})
    rows = jax_export.symbolic_shape(ROWS if block == 1 else f"{block}*row_blocks")[0]

    def spec(a, b):
        shape = tuple(rows if x != y else x for x, y in zip(np.shape(a), np.shape(b)))
        dtype = a.dtype if hasattr(a, "dtype") else np.result_type(a)  # Python scalars: numpy's default
        return jax.ShapeDtypeStruct(shape, jax.dtypes.canonicalize_dtype(dtype))

    return jax.tree.map(spec, small, large)


def _describe(shape) -> list:
    return [str(d) if not isinstance(d, (int, np.integer)) else int(d) for d in shape]


def export(posterior, path, max_rows: int | None = None, platforms: tuple[str, ...] | None = None,
           draws_dtype: str | None = None, memory_budget: int | None = None) -> Path:
    """Write ``posterior``'s compiled predictive function, its draws and a manifest to ``path``.

    Parameters
    ----------
    posterior : Posterior
    path : str or Path
        Directory to write (atomically; an exported predictor there is replaced).
    max_rows : int, optional
        Most rows per call of the compiled function (larger requests run in chunks); rounded
        down to a power of two, at least ``ROW_BLOCK`` (16). Default: as ``Posterior.predict``,
        from the memory budget.
    platforms : tuple of str, optional
        ``jax.export`` platforms to lower for. Default ``("cpu", "cuda")``, or this machine's
        platform alone when the model cannot be lowered for both.
    draws_dtype : {"float16", "bfloat16"}, optional
        Store the draws in 16 bits (see ``bayesinf.persistence.DRAWS_DTYPES``); they are called
        as float32.
    memory_budget : int, optional
        Bytes of predictive draws per chunk, as for ``Posterior.predict``.

    Returns
    -------
    Path

    Raises
    ------
    InputError
        Bad ``max_rows`` or ``platforms``; a model whose static arguments are not JSON; a formula
        model (its ``predict`` builds the design from a DataFrame, which an exported predictor
        cannot do without evaluating formula text; field ``"posterior"``); or a predictive
        function ``jax.export`` cannot lower (field ``"posterior"``, quoting JAX's reason).
    """
    import jax
    from jax import export as jax_export

    from .persistence import (_check_static_json, _plain_info, atomic_directory, encode_draws, package_versions,
                              sha256_file, write_npz)
    from .runtime import precision

    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, (int, np.integer))
                                 or max_rows < 1):
        raise InputError("max_rows", f"of export must be a positive int or None; got {max_rows!r}")
    if platforms is not None:
        if (isinstance(platforms, str) or not isinstance(platforms, (tuple, list)) or not platforms
                or not all(isinstance(p, str) and p in PLATFORMS for p in platforms)):
            raise InputError("platforms", f"of export must be a tuple of platform names; got {platforms!r}",
                             f"some of {list(PLATFORMS)}, e.g. ('cpu', 'cuda')")
    _check_exportable(posterior)
    _check_static_json(posterior.schema.static)
    predictor = posterior.predict_fn(memory_budget)
    state = _predictor_state(predictor)
    if max_rows is not None:
        state["max_rows"] = max(ROW_BLOCK, 1 << (int(max_rows).bit_length() - 1))
    fit_arrays = {k: v for k, v in posterior.data.items() if k not in posterior.schema.names("observed")}
    with precision(posterior.dtype):
        small, large = (_probe_calls(predictor, fit_arrays, n) for n in PROBE_ROWS)
        specs = _symbolic_specs(small[0], large[0])
        targets = tuple(platforms) if platforms is not None else DEFAULT_PLATFORMS
        try:
            exported = jax_export.export(predictor.compiled, platforms=targets)(*specs[0], **specs[1])
        except Exception as exc:
            if platforms is not None:
                raise _not_exportable(exc, targets) from exc
            targets = (jax.default_backend(),)
            try:
                exported = jax_export.export(predictor.compiled, platforms=targets)(*specs[0], **specs[1])
            except Exception as exc_here:
                raise _not_exportable(exc_here, targets) from exc_here
        blob = exported.serialize()

    stored, encodings = {}, {}
    for name, value in predictor.params.items():
        stored[f"draws/{name}"], encoding = encode_draws(name, np.asarray(value), draws_dtype)
        if encoding is not None:
            encodings[f"draws/{name}"] = encoding
    for name in posterior.schema.names("array"):
        stored[f"data/{name}"] = np.asarray(posterior.data[name])
    inputs = []
    for spec in posterior.schema.specs:
        if spec.role in ("rows", "array"):
            entry = spec.to_json()
            entry["shape"] = [ROWS, *spec.shape] if spec.role == "rows" else list(spec.shape)
            inputs.append(entry)
    out_avals = jax.tree.leaves(exported.out_avals)
    outputs = [{"name": s, "num_classes": posterior.sites.num_classes.get(s),
                "shape": _describe(aval.shape), "dtype": str(aval.dtype)}
               for s, aval in zip(sorted(predictor.observed_sites), out_avals)]
    path = Path(path)
    with atomic_directory(path, MANIFEST, "an exported predictor") as tmp:
        (tmp / FUNCTION).write_bytes(blob)
        write_npz(tmp / DRAWS, stored)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "versions": package_versions(),
            "serialization": {
                "library": "jax.export",
                "calling_convention_version": exported.calling_convention_version,
                "flatbuffer_version": _flatbuffer_version(),
                "platforms": list(exported.platforms),
            },
            "dtype": posterior.dtype,
            "num_draws": predictor.num_draws,
            "draws_dtype": draws_dtype,
            "inputs": inputs,
            "static": dict(posterior.schema.static),
            "observed": list(posterior.schema.names("observed")),
            "outputs": outputs,
            "predictor": state,
            "function_arguments": [{"shape": _describe(a.shape), "dtype": str(a.dtype)}
                                   for a in jax.tree.leaves(exported.in_avals)],
            "arrays": {k: {"shape": list(v.shape), "dtype": v.dtype.str,
                           **({"encoding": encodings[k]} if k in encodings else {})} for k, v in stored.items()},
            "source": {"model": posterior.model_path, "method": posterior.method, "info": _plain_info(posterior.info)},
            "files": {FUNCTION: sha256_file(tmp / FUNCTION), DRAWS: sha256_file(tmp / DRAWS)},
        }
        with open(tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
    return path


def _check_exportable(posterior) -> None:
    """Refuse models whose ``predict`` turns user data into the model's arguments (formula models).

    Their ``predict`` takes a DataFrame and builds design matrices and group codes by evaluating
    the formula's terms; the exported function takes those arrays, and rebuilding them where the
    predictor is loaded would mean evaluating formula text read from the export. Rather than
    export a predictor that needs internal arrays, ``export`` refuses.
    """
    if callable(getattr(posterior.model, "__bayesinf_arguments__", None)):
        raise InputError(
            "posterior", f"has a {type(posterior.model).__name__}, whose predict takes a DataFrame and builds "
            "the design from the formula; an exported predictor takes the model's arrays only, so formula "
            "models cannot be exported",
            hint="Save it with Posterior.save (or a ModelStore) and predict with bayesinf.load or "
                 "`bayesinf serve`, which take DataFrames.")


def _not_exportable(exc: Exception, platforms: tuple[str, ...]) -> InputError:
    """The error for a predictive function that ``jax.export`` cannot export (JAX's reason quoted)."""
    import jax

    text = str(exc).strip()
    reason = f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
    hint = ("An exported model may use only JAX operations (no host callbacks such as jax.pure_callback) and "
            "must treat rows independently; Posterior.save and bayesinf.load have neither restriction.")
    if tuple(platforms) != (jax.default_backend(),):
        hint += f" Or export for this machine's platform only: platforms=({jax.default_backend()!r},)."
    return InputError("posterior", f"cannot be exported: jax.export failed on its predictive function with a "
                      f"symbolic row count for the platforms {list(platforms)} ({reason})", hint=hint)


def _predictor_state(predictor: Predictor) -> dict:
    """The plain (JSON) attributes of a ``Predictor``: row arguments, sites, sizes."""
    out = {}
    for k, v in vars(predictor).items():
        try:
            json.dumps(v)
        except TypeError:
            continue
        out[k] = list(v) if isinstance(v, tuple) else v
    return out


def _flatbuffer_version() -> int | None:
    try:
        from jax._src.export import serialization
    except ImportError:  # pragma: no cover - private module moved
        return None
    return getattr(serialization, "_SERIALIZATION_VERSION", None)


# ----------------------------------------------------------------------------- loading
class ExportedPredictor(Predictor):
    """A ``Predictor`` whose compiled function is a deserialized ``jax.export`` artifact.

    It reuses ``Predictor.chunks`` (row buckets, chunks, keys) unchanged, so it draws exactly
    what the exporting posterior's predictor draws. Made by ``load_predictor``.
    """

    def __init__(self, exported, params: Mapping[str, Any], state: Mapping[str, Any]):
        import jax

        self.__dict__.update({k: tuple(v) if isinstance(v, list) else v for k, v in state.items()})
        self.model = None
        self.exported = exported
        self.params = dict(params)
        self._fn = jax.jit(exported.call)


class PortablePredictor:
    """Posterior predictive of an exported model, without the model's code.

    Attributes
    ----------
    manifest : dict
        The exported manifest (inputs, outputs, versions, checksums).
    inputs : tuple of str
        Names of the inputs ``predict`` accepts (row arguments first need new values).
    """

    def __init__(self, manifest: dict, draw_fn: ExportedPredictor, fit_arrays: Mapping[str, np.ndarray]):
        from .data import ArgSpec

        self.manifest = manifest
        self._draw_fn = draw_fn
        self._fit_arrays = dict(fit_arrays)
        self._specs = tuple(ArgSpec.from_json({**d, "shape": d["shape"][1:] if d["role"] == "rows" else d["shape"]})
                            for d in manifest["inputs"])
        self.inputs = tuple(s.name for s in self._specs)

    @property
    def num_draws(self) -> int:
        """Posterior draws per prediction."""
        return int(self.manifest["num_draws"])

    @property
    def max_rows(self) -> int:
        """Most rows per call of the compiled function; larger requests run in chunks."""
        return int(self._draw_fn.max_rows)

    def compile_count(self) -> int:
        """Compiled variants so far (one per row bucket used)."""
        return self._draw_fn.compile_count()

    def __repr__(self):
        outputs = [o["name"] for o in self.manifest["outputs"]]
        return f"PortablePredictor(inputs={list(self.inputs)}, outputs={outputs}, draws={self.num_draws})"

    def _arrays(self, args: tuple, inputs: Mapping[str, Any]) -> tuple[int, dict[str, np.ndarray]]:
        from .data import _conform, as_array

        order = [*self.inputs]
        if len(args) > len(order):
            raise InputError("predict", f"got {len(args)} positional inputs", f"at most {len(order)}: {order}")
        given = dict(zip(order, args))
        for name, value in inputs.items():
            if name in given:
                raise InputError(name, "was given both by position and by name")
            given[name] = value
        static = self.manifest.get("static", {})
        for name in list(given):
            if name in self.inputs:
                continue
            if name in self.manifest.get("observed", ()):
                if given[name] is not None:
                    raise InputError(name, "is observed by the model; predict samples it", hint="Leave it out.")
            elif name in static:
                if given[name] != static[name] and not (isinstance(static[name], list)
                                                        and tuple(static[name]) == given[name]):
                    raise InputError(name, "differs from the value the model was exported with", f"{static[name]!r}")
            else:
                raise InputError(name, "is not an input of the exported predictor", f"some of {list(self.inputs)}")
            del given[name]
        arrays, num_rows, first = {}, None, None
        for spec in self._specs:
            if spec.role == "rows":
                if spec.name not in given:
                    raise InputError(spec.name, "is missing", f"new rows for the input '{spec.name}'")
                _check_frame_columns(spec.name, given[spec.name])
                value = _conform(spec, given[spec.name])
                if num_rows is None:
                    num_rows, first = value.shape[0], spec.name
                elif value.shape[0] != num_rows:
                    raise InputError(spec.name, f"has {value.shape[0]} rows but '{first}' has {num_rows}",
                                     "the same number of rows in every row input")
            elif spec.name in given:
                _check_frame_columns(spec.name, given[spec.name])
                value, _ = as_array(spec.name, given[spec.name])
                if value.shape != spec.shape:
                    raise InputError(spec.name, f"has shape {value.shape}", f"shape {spec.shape}, as at fit")
                value = value.astype(np.dtype(spec.dtype), copy=False)
            else:
                value = self._fit_arrays[spec.name]
            arrays[spec.name] = value
        if num_rows is None:
            row_inputs = [s.name for s in self._specs if s.role == "rows"]
            raise InputError("predict", "got no row inputs", f"values for {row_inputs}")
        return num_rows, arrays

    def predict(self, *args, levels=(0.5, 0.9), kind: str = "eti", seed: int = 0, return_draws: bool | None = None,
                row_offset: int = 0, **inputs):
        """Posterior predictive summaries for new rows, as ``Posterior.predict``.

        Parameters
        ----------
        *args, **inputs
            Values of the inputs (``self.inputs``), by position or name; row inputs are
            required, the fit's other arrays are used when left out.
        levels : float or sequence of float
        kind : {"eti", "hdi"}
        seed : int
            Same seed and inputs, same numbers as ``Posterior.predict`` of the exported posterior.
        return_draws : bool, optional
            Keep the predictive draws (default: when they take at most 512 MiB).
        row_offset : int
            Index of the first row in a larger table scored in pieces, as for ``Posterior.predict``.

        Returns
        -------
        Prediction

        Raises
        ------
        InputError
            An unknown, missing or malformed input (names the input), bad levels, kind or seed.
        """
        from .data import check_seed
        from .intervals import check_kind, check_levels
        from .posterior import KEEP_DRAWS_BYTES, summary_executor
        from .prediction import BLOCK_ROWS, assemble
        from .runtime import precision

        levels = check_levels(levels)
        kind = check_kind(kind)
        seed = check_seed(seed, "predict")
        if isinstance(row_offset, bool) or not isinstance(row_offset, (int, np.integer)) or row_offset < 0:
            raise InputError("row_offset", f"of predict must be a non-negative int; got {row_offset!r}")
        num_rows, arrays = self._arrays(args, inputs)
        sizes = {o["name"]: int(np.prod([d for d in o["shape"] if isinstance(d, int)][1:] or [1]))
                 for o in self.manifest["outputs"]}
        if return_draws is None:
            return_draws = num_rows * self.num_draws * sum(sizes.values()) * 4 <= KEEP_DRAWS_BYTES
        info = {o["name"]: {"num_classes": o.get("num_classes")} for o in self.manifest["outputs"]}
        with precision(self.manifest["dtype"]):
            chunks = self._draw_fn.chunks(arrays, num_rows, seed, row_offset=int(row_offset))
            return assemble(chunks, num_rows, info, levels, kind, seed, bool(return_draws),
                            executor=summary_executor() if num_rows > BLOCK_ROWS else None)


def _check_frame_columns(name: str, value) -> None:
    """A DataFrame input's columns must be numeric; the advice fits an exported predictor, whose
    inputs are the model's arrays (categories as the integer codes the model was fitted with)."""
    from .data import _is_numeric_dtype

    if hasattr(value, "columns") and hasattr(value, "dtypes"):
        for column, dtype in zip(value.columns, value.dtypes):
            if not _is_numeric_dtype(getattr(dtype, "numpy_dtype", dtype)):  # nullable Int64 etc. are numbers
                raise InputError(f"{name}['{column}']", f"has non-numeric dtype {dtype}", "numbers or booleans",
                                 "An exported predictor takes the model's arguments as numeric arrays; give "
                                 "categories as the integer codes the model was fitted with.")


def load_predictor(path) -> PortablePredictor:
    """Load a predictor written by ``Posterior.export`` (no model code, no NumPyro needed).

    Raises
    ------
    ModelFileError
        Missing, corrupt, tampered with (sha256 mismatch) or foreign files, or a serialized
        function this jax cannot read (the manifest's versions say which jax wrote it).
    """
    from jax import export as jax_export

    from .persistence import decode_draws, read_json_manifest
    from .runtime import precision

    path = Path(path)
    manifest = read_json_manifest(path, MANIFEST, FORMAT, FORMAT_VERSION, "an exported bayesinf predictor")
    for name in (FUNCTION, DRAWS):
        if name not in manifest["files"]:
            raise ModelFileError(path / MANIFEST, f"lists no checksummed {name}")
    try:
        with precision(manifest["dtype"]):
            exported = jax_export.deserialize(bytearray((path / FUNCTION).read_bytes()))
    except Exception as exc:
        versions = manifest.get("versions", {})
        raise ModelFileError(path / FUNCTION, f"cannot be deserialized by this jax ({type(exc).__name__}: {exc}); "
                             f"it was written by jax {versions.get('jax')}, jaxlib {versions.get('jaxlib')}") from None
    try:
        with np.load(path / DRAWS, allow_pickle=False) as npz:
            stored = {k: npz[k] for k in npz.files}
        meta = manifest["arrays"]
        params = {k[len("draws/"):]: decode_draws(v, meta.get(k, {}).get("encoding"))
                  for k, v in stored.items() if k.startswith("draws/")}
        fit_arrays = {k[len("data/"):]: v for k, v in stored.items() if k.startswith("data/")}
        missing = [s["name"] for s in manifest["inputs"] if s["role"] == "array" and s["name"] not in fit_arrays]
        if missing or len(params) != len(manifest["predictor"].get("params_names", params)):
            raise ValueError(f"{DRAWS} lacks the arrays {missing}")
        draw_fn = ExportedPredictor(exported, params, manifest["predictor"])
        return PortablePredictor(manifest, draw_fn, fit_arrays)
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(path, f"inconsistent exported predictor ({type(exc).__name__}: {exc})") from None
