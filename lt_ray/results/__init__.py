"""Study results as Parquet: ``trials``, ``epochs`` and ``per_class`` tables (no Ray import).

The Ray layer converts its ResultGrid into :class:`TrialRecord` objects; :func:`write_study`
writes them, :func:`read_study` reads them back, :func:`recompute_summary` recomputes the
long-tail metrics from per-class recall (with or without the GM/HM epsilon).
"""

from lt_ray.results.reader import StudyTables, read_study, recompute_summary
from lt_ray.results.schema import TrialRecord
from lt_ray.results.writer import write_study

__all__ = ["StudyTables", "TrialRecord", "read_study", "recompute_summary", "write_study"]
