"""Study analysis from Parquet (no Ray): comparison tables, figures and a report.

``analyze(paths, out, select, group_by, formats) -> Report`` reads one or more study folders
(local or URI), selects each group's best completed search trial on a validation metric, and
writes ``comparison.{md,csv,tex}``, ``figures/*.{png,svg}``, ``report.md`` and a
self-contained ``report.html``. Used by ``lt-ray analyze``.
"""

from lt_ray.analysis.report import Report, analyze
from lt_ray.analysis.tables import pareto_mask

__all__ = ["Report", "analyze", "pareto_mask"]
