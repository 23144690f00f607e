"""``FitCollection``: the posteriors of ``fit_many``, one per group, with the groups that failed.

Saved as a directory: one saved ``Posterior`` per group (``g00000/``, ``g00001/``, ... in the
core's npz + JSON format) and ``index.json`` listing each group's key with its type (int or str),
its directory and the sha256 of the group's manifest (which holds the sha256 of its arrays), the
failed groups and the model spec. Nothing is pickled or evaluated when loading.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping


from ..errors import InputError, ModelFileError
from .problems import ModelSpec, group_seed, key_from_json, key_to_json, split_groups

__all__ = ["FitCollection", "GroupFailure", "load_many", "FORMAT", "FORMAT_VERSION"]

FORMAT = "bayesinf.fit_collection"
FORMAT_VERSION = 1
INDEX = "index.json"
_GROUP_DIR = re.compile(r"^g\d{5,}$")


@dataclass(frozen=True)
class GroupFailure:
    """Why a group has no posterior: the exception's type and message (and, before saving, the
    exception itself)."""

    error_type: str
    message: str
    exception: BaseException | None = None

    def __str__(self):
        return f"{self.error_type}: {self.message}"


class FitCollection:
    """One ``Posterior`` per group; made by ``fit_many`` or ``FitCollection.load``.

    ``fits[key]`` is a group's ``Posterior``; ``keys()``, iteration (keys), ``len`` and ``in``
    cover the groups that were fitted; ``failed`` maps each group whose fit raised to a
    ``GroupFailure``.

    Attributes
    ----------
    by : str
        The column that names the groups.
    failed : dict of key -> GroupFailure
    info : dict
        Timings and the strategy of the run.
    """

    def __init__(self, fits: Mapping[Any, Any], by: str, spec: ModelSpec | None,
                 failed: Mapping[Any, GroupFailure] | None = None, info: Mapping[str, Any] | None = None):
        self._fits = dict(fits)
        self.by = by
        self.spec = spec
        self.failed = dict(failed or {})
        self.info = dict(info or {})

    # ----------------------------------------------------------------- mapping
    def __getitem__(self, key):
        if key in self._fits:
            return self._fits[key]
        if key in self.failed:
            raise KeyError(f"group {key!r} failed to fit: {self.failed[key]}")
        raise KeyError(f"no group {key!r} in this collection (column {self.by!r})")

    def keys(self) -> list:
        return list(self._fits)

    def values(self) -> list:
        return list(self._fits.values())

    def items(self) -> list:
        return list(self._fits.items())

    def __iter__(self) -> Iterator:
        return iter(self._fits)

    def __len__(self) -> int:
        return len(self._fits)

    def __contains__(self, key) -> bool:
        return key in self._fits

    def __repr__(self):
        shown = ", ".join(map(repr, list(self._fits)[:5])) + (", ..." if len(self._fits) > 5 else "")
        return f"FitCollection(by={self.by!r}, groups={len(self._fits)} [{shown}], failed={len(self.failed)})"

    # ----------------------------------------------------------------- tables
    def diagnose(self):
        """One row per group (pandas DataFrame): ``r_hat_max``, ``ess_bulk_min``, ``ess_tail_min``,
        ``divergences``, ``bfmi_min`` (NUTS) or ``converged`` (SVI), ``ok`` and ``verdict`` ("ok",
        the problems found, or "failed: <error>")."""
        import pandas as pd

        rows = []
        for key, post in self._fits.items():
            d = post.diagnose()
            rows.append({self.by: key, **d.checks, "ok": d.ok, "verdict": "ok" if d.ok else " ".join(d.problems)})
        for key, failure in self.failed.items():
            rows.append({self.by: key, "ok": False, "verdict": f"failed: {failure}"})
        frame = pd.DataFrame(rows)
        front = [self.by, "r_hat_max", "ess_bulk_min", "ess_tail_min", "divergences", "bfmi_min"]
        order = [c for c in front if c in frame.columns]
        order += [c for c in frame.columns if c not in order and c not in ("ok", "verdict")] + ["ok", "verdict"]
        return frame[order].reset_index(drop=True)

    def summary(self, var_names=None, level: float = 0.9, kind: str = "eti"):
        """Every group's ``Posterior.summary`` stacked: columns ``<by>``, ``parameter``, then the
        summary columns (mean, sd, interval, MCSE, ESS, R-hat)."""
        import pandas as pd

        frames = []
        for key, post in self._fits.items():
            table = post.summary(level=level, kind=kind, var_names=var_names)
            table = table.rename_axis("parameter").reset_index()
            table.insert(0, self.by, [key] * len(table))
            frames.append(table)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[self.by, "parameter"])

    # ----------------------------------------------------------------- prediction
    def predict(self, df_new, by: str | None = None, *, levels=(0.5, 0.9), kind: str = "eti", seed: int = 0,
                **predict_kwargs):
        """Predict each row of ``df_new`` with its group's posterior.

        Parameters
        ----------
        df_new : pandas.DataFrame
            New rows with the group column and the model's input columns (no response needed).
        by : str, optional
            The group column of ``df_new`` (default: the fit's ``by``).
        levels, kind, seed, **predict_kwargs
            As ``Posterior.predict``; group ``key`` predicts with a seed derived from
            ``(seed, key)`` as at fit, so a row's prediction does not depend on the other groups.

        Returns
        -------
        pandas.DataFrame
            Indexed like ``df_new``: the group column then ``Prediction.to_pandas()``'s columns.

        Raises
        ------
        InputError
            The group column is missing or has missing values, or names groups that were not
            fitted (or whose fit failed).
        """
        import pandas as pd

        from ..data import check_seed

        by = self.by if by is None else by
        seed = check_seed(seed, "predict")
        if self.spec is None or (self.spec.kind == "make_args" and self.spec.make_args is None):
            raise InputError("make_args", "is needed to turn rows into model arguments, and this collection "
                             "could not import it", hint="Load with FitCollection.load(path, make_args=...).")
        work = df_new.reset_index(drop=True) if hasattr(df_new, "reset_index") else df_new
        groups = split_groups(work, by)  # sub-frames indexed by row position
        unseen = [k for k, _ in groups if k not in self._fits]
        if unseen:
            failed = [k for k in unseen if k in self.failed]
            raise InputError(by, f"holds {len(unseen)} group(s) without a fitted posterior: "
                             f"{unseen[:10]}{' ...' if len(unseen) > 10 else ''}"
                             + (f" ({len(failed)} of them failed to fit)" if failed else ""),
                             f"groups among the {len(self._fits)} fitted ones")
        frames = []
        for key, rows in groups:
            post = self._fits[key]
            if self.spec.kind == "formula":
                args, kwargs = (rows,), {}
            else:
                _, args, kwargs = self.spec.arguments(rows, response=False, observed=post.schema.names("observed"))
            pred = post.predict(*args, levels=levels, kind=kind, seed=group_seed(seed, key), **predict_kwargs,
                                **kwargs)
            table = pred.to_pandas()
            table.index = rows.index
            table.insert(0, by, [key] * len(table))
            frames.append(table)
        out = pd.concat(frames).sort_index()
        out.index = df_new.index
        return out

    # ----------------------------------------------------------------- persistence
    def save(self, path) -> Path:
        """Save to directory ``path`` atomically (one saved posterior per group and ``index.json``)."""
        from ..persistence import sha256_file, atomic_directory, save

        path = Path(path)
        with atomic_directory(path, INDEX, "a bayesinf fit collection") as tmp:
            groups, files = [], {}
            for i, (key, post) in enumerate(self._fits.items()):
                name = f"g{i:05d}"
                save(post, tmp / name)
                files[f"{name}/manifest.json"] = sha256_file(tmp / name / "manifest.json")
                groups.append({**key_to_json(key), "path": name})
            index = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "by": self.by,
                "spec": self.spec.to_json() if self.spec is not None else None,
                "groups": groups,
                "failed": [{**key_to_json(k), "error_type": f.error_type, "message": f.message}
                           for k, f in self.failed.items()],
                "info": {k: v for k, v in self.info.items() if isinstance(v, (int, float, str, bool, type(None)))},
                "files": files,
            }
            with open(tmp / INDEX, "w") as f:
                json.dump(index, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
        return path

    @classmethod
    def load(cls, path, model: Callable | None = None, make_args: Callable | None = None) -> "FitCollection":
        """Load a collection saved with ``save``.

        Parameters
        ----------
        path : str or Path
        model : callable, optional
            The NumPyro model, when it cannot be imported from the path recorded at save time
            (formula models rebuild themselves).
        make_args : callable, optional
            The ``make_args`` function given to ``fit_many``, when it cannot be imported (needed
            by ``predict`` only).

        Raises
        ------
        ModelFileError
            Missing, corrupt or tampered files (every group's manifest is checksummed), or an
            invalid index.
        """
        from ..persistence import load, read_json_manifest

        path = Path(path)
        index = read_json_manifest(path, INDEX, FORMAT, FORMAT_VERSION, "a bayesinf fit collection")
        try:
            by = index["by"]
            if not isinstance(by, str):
                raise ValueError(f"'by' is {by!r}")
            spec = _spec_from_json(index.get("spec"), model, make_args)
            fits, failed = {}, {}
            for entry in index["groups"]:
                key, name = key_from_json(entry), entry["path"]
                if not isinstance(name, str) or not _GROUP_DIR.match(name):
                    raise ValueError(f"invalid group directory {name!r}")
                if f"{name}/manifest.json" not in index["files"]:
                    raise ValueError(f"group directory {name!r} is not checksummed")
                if key in fits:
                    raise ValueError(f"group key {key!r} appears twice")
                fits[key] = load(path / name, model=model)
            for entry in index.get("failed", []):
                failed[key_from_json(entry)] = GroupFailure(str(entry["error_type"]), str(entry["message"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(path / INDEX, f"invalid index ({type(exc).__name__}: {exc})") from None
        return cls(fits, by, spec, failed, index.get("info"))


def _spec_from_json(spec, model, make_args) -> ModelSpec | None:
    if spec is None:
        return None
    kind = spec.get("kind")
    if kind == "formula":
        return ModelSpec("formula", formula=str(spec["formula"]))
    if kind == "columns":
        return ModelSpec("columns", model=model, columns=dict(spec["columns"]),
                         model_kwargs=dict(spec.get("model_kwargs") or {}))
    if kind == "make_args":
        if make_args is None and spec.get("make_args"):
            from ..persistence import import_model

            try:
                make_args = import_model(spec["make_args"])
            except Exception:
                make_args = None
        return ModelSpec("make_args", make_args=make_args)
    raise ValueError(f"unknown spec kind {kind!r}")


def load_many(path, model: Callable | None = None, make_args: Callable | None = None) -> FitCollection:
    """Load a ``FitCollection`` saved with ``FitCollection.save`` (see ``FitCollection.load``)."""
    return FitCollection.load(path, model=model, make_args=make_args)
