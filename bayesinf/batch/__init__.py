"""Batch scoring of large tables: ``predict`` streams a CSV or Parquet file (or a DataFrame)
through a posterior's predictive distribution chunk by chunk, with bounded memory, resumable part
files and an atomic output; ``predict_dask`` does the same over the partitions of a Dask
DataFrame on a cluster.

Every row's predictive draws depend only on the seed, the posterior draw and the row's index in
the whole input (see ``bayesinf.predictive``), so the output does not depend on ``chunk_rows``,
on the partitions, or on where a resumed run restarted, and equals ``Posterior.predict`` on the
whole input with the same seed.
"""

from ._plan import EXTRA, InputPlan, make_plan, prediction_columns
from .scoring import DEFAULT_CHUNK_ROWS, BatchResult, predict, score_frame
from .distributed import predict_dask

__all__ = ["predict", "predict_dask", "BatchResult", "InputPlan", "make_plan", "score_frame",
           "prediction_columns", "DEFAULT_CHUNK_ROWS", "EXTRA"]
