"""Converters from public data sets into the omics-risk cohort data contract (docs/data_format.md).

Each converter reads a data set as it is distributed and writes a cohort directory that ``omics-risk validate``
accepts, so public data can be trained on and benchmarked exactly like an in-house cohort.
"""

from omics_risk.data.convert.tcga import convert_tcga, convert_tcga_lusc
from omics_risk.data.convert.tcga_projects import PROJECTS, TcgaProject

__all__ = ["PROJECTS", "TcgaProject", "convert_tcga", "convert_tcga_lusc"]
