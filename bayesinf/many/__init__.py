"""Many models, one per group of rows: ``fit_many`` and its result, ``FitCollection``.

>>> fits = bi.fit_many("sales ~ price + promo", df, by="store_id", seed=0)   # doctest: +SKIP
>>> fits["store_7"].summary(); fits.diagnose(); fits.predict(new_df)           # doctest: +SKIP
>>> fits.save("runs/stores"); fits = bi.load_many("runs/stores")                # doctest: +SKIP

Modules: ``problems`` (groups, seeds, each group's model and data), ``sampler`` (NUTS over many
groups in one compiled program), ``execute`` (batching and running locally, in processes or on
Dask), ``collection`` (the result and its files), ``fit`` (the entry point).
"""

from .collection import FitCollection, GroupFailure, load_many
from .fit import fit_many
from .problems import group_seed

__all__ = ["fit_many", "FitCollection", "GroupFailure", "load_many", "group_seed"]
