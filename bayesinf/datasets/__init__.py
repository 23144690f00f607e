"""Small real datasets bundled with bayesinf.

The data are read from JSON files shipped inside the package (no network
access, no pickle). Every loader returns a `Dataset` whose ``frame`` is
a fresh `pandas.DataFrame`, so changing it never affects a later load.

All three datasets come from posteriordb (https://github.com/stan-dev/posteriordb,
commit 28f8d3d6e975315f42aa274a8399f21e07a43b30), distributed under the
BSD-3-Clause licence; the licence text ships next to the data as
``LICENCE-posteriordb.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib.resources import files
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "Dataset",
    "citation",
    "list_datasets",
    "load_eight_schools",
    "load_radon",
    "load_wells",
]

_POSTERIORDB_CITATION = (
    "Magnusson, M., Buerkner, P., Vehtari, A. posteriordb: a set of posteriors "
    "for Bayesian inference and probabilistic programming (version 0.5, 2023)."
)
_LICENCE = (
    "BSD-3-Clause (posteriordb repository default; Copyright (c) 2011-2024, "
    "Stan Developers and their Assignees). Full text: LICENCE-posteriordb.md "
    "in bayesinf/datasets."
)
# Public name -> JSON file shipped in this package.
_FILES = {
    "radon": "radon_mn.json",
    "eight_schools": "eight_schools.json",
    "wells": "wells.json",
}


@dataclass(frozen=True, eq=False)
class Dataset:
    """A bundled dataset.

    Attributes
    ----------
    name : str
        Short name, as listed by `list_datasets`.
    frame : pandas.DataFrame
        The data, one row per observation.
    description : str
        Title and description of the data.
    citation : str
        References to cite when using the data.
    source : str
        Where the data were taken from (posteriordb, with commit).
    licence : str
        Licence of the data.
    """

    name: str
    frame: pd.DataFrame = field(repr=False)
    description: str = field(repr=False)
    citation: str = field(repr=False)
    source: str
    licence: str = field(repr=False)


def _read(name: str) -> dict[str, Any]:
    """Parse the bundled JSON file of dataset ``name``."""
    try:
        fname = _FILES[name]
    except KeyError:
        from ..errors import InputError

        raise InputError("name", f"{name!r} is not a bundled dataset", f"one of {list(_FILES)}") from None
    with files(__name__).joinpath(fname).open("r", encoding="utf-8") as fh:
        return json.load(fh)


def _citation_of(raw: dict[str, Any]) -> str:
    return f"{raw['references'].strip()}\n{_POSTERIORDB_CITATION}"


def _dataset(name: str, raw: dict[str, Any], frame: pd.DataFrame) -> Dataset:
    return Dataset(
        name=name,
        frame=frame,
        description=f"{raw['title']}\n\n{raw['description']}",
        citation=_citation_of(raw),
        source=raw["source"],
        licence=_LICENCE,
    )


def list_datasets() -> tuple[str, ...]:
    """Names of the bundled datasets.

    Returns
    -------
    tuple of str
        ``("radon", "eight_schools", "wells")``.
    """
    return tuple(_FILES)


def citation(name: str) -> str:
    """Citation text for a bundled dataset.

    Parameters
    ----------
    name : str
        One of `list_datasets`.

    Returns
    -------
    str
        The data's references followed by the posteriordb citation.

    Raises
    ------
    InputError
        If ``name`` is not a bundled dataset (an ``InputError`` is a ``ValueError``).
    """
    return _citation_of(_read(name))


def load_radon() -> Dataset:
    """Minnesota radon measurements (919 houses in 85 counties).

    Returns
    -------
    Dataset
        ``frame`` has one row per house with columns ``log_radon`` (float),
        ``floor`` (int; 0 basement, 1 first floor), ``county`` (int, 0-based
        index 0..84) and ``log_uppm`` (float, county log uranium, repeated on
        each row of the county).

    Notes
    -----
    Cite Gelman, A. and Hill, J. (2006), *Data Analysis Using Regression and
    Multilevel/Hierarchical Models*, Cambridge University Press; and
    posteriordb (Magnusson, Bürkner & Vehtari).
    """
    import numpy as np
    import pandas as pd

    raw = _read("radon")
    d = raw["data"]
    frame = pd.DataFrame(
        {
            "log_radon": np.asarray(d["log_radon"], dtype=np.float64),
            "floor": np.asarray(d["floor_measure"], dtype=np.int64),
            "county": np.asarray(d["county_idx"], dtype=np.int64) - 1,
            "log_uppm": np.asarray(d["log_uppm"], dtype=np.float64),
        }
    )
    if len(frame) != d["N"] or frame["county"].nunique() != d["J"]:
        raise RuntimeError("bundled radon data are inconsistent with N and J")
    return _dataset("radon", raw, frame)


def load_eight_schools() -> Dataset:
    """Eight schools coaching experiment (Rubin 1981).

    Returns
    -------
    Dataset
        ``frame`` has 8 rows with columns ``school`` (int, 0..7), ``y``
        (float, estimated coaching effect) and ``sigma`` (float, its known
        standard error).

    Notes
    -----
    Cite Rubin, D. B. (1981), *J. Educational Statistics* 6(4), 377-401;
    Gelman et al., *Bayesian Data Analysis* (3rd ed., 2013), Section 5.5; and
    posteriordb (Magnusson, Bürkner & Vehtari).
    """
    import numpy as np
    import pandas as pd

    raw = _read("eight_schools")
    d = raw["data"]
    frame = pd.DataFrame(
        {
            "school": np.arange(d["J"], dtype=np.int64),
            "y": np.asarray(d["y"], dtype=np.float64),
            "sigma": np.asarray(d["sigma"], dtype=np.float64),
        }
    )
    return _dataset("eight_schools", raw, frame)


def load_wells() -> Dataset:
    """Bangladesh well switching survey (3020 households).

    Returns
    -------
    Dataset
        ``frame`` has one row per household with columns ``switched`` (int
        0/1), ``dist`` (float, metres to the nearest safe well), ``arsenic``
        (float, arsenic level of the current well), ``assoc`` (int 0/1,
        community association member), ``educ`` (int, years of education)
        and ``dist100`` (float, ``dist / 100``).

    Notes
    -----
    Cite Gelman, A. and Hill, J. (2006), *Data Analysis Using Regression and
    Multilevel/Hierarchical Models*, Cambridge University Press, ch. 5; and
    posteriordb (Magnusson, Bürkner & Vehtari).
    """
    import numpy as np
    import pandas as pd

    raw = _read("wells")
    d = raw["data"]
    frame = pd.DataFrame(
        {
            "switched": np.asarray(d["switched"], dtype=np.int64),
            "dist": np.asarray(d["dist"], dtype=np.float64),
            "arsenic": np.asarray(d["arsenic"], dtype=np.float64),
            "assoc": np.asarray(d["assoc"], dtype=np.int64),
            "educ": np.asarray(d["educ"], dtype=np.int64),
        }
    )
    frame["dist100"] = frame["dist"] / 100.0
    return _dataset("wells", raw, frame)
