"""The modality registry: one entry per file format says everything the framework does with it.

A format (cohort.yaml ``modalities: {name: {format: ...}}``) declares its file extensions, its reader, the check
``omics-risk validate`` runs on each of its files, its default extractors (``_target_`` dotted paths, instantiated
by ``omics-risk extract``: the data layer never imports features), and the fold-fitted preprocessing kind its
feature table gets in a model. The contract, the validator, the extractor and the models look formats up here
instead of keeping their own lists, so a new tabular modality is one :func:`register_format` call plus one
extractor file (docs/architecture.md, "Adding a modality").
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from omics_risk.data import file_checks, readers, registry
from omics_risk.data.registry import *  # noqa: F403  (the registry's API: import it from here, with the built-ins)
from omics_risk.data.registry import ModalityFormat, register_format

__all__ = registry.__all__

# --------------------------------------------------------------------------------------------------- built-ins


def _metabolomics_options(modality: str, options: Mapping[str, Any]) -> str | None:
    if isinstance(options.get("sample_sheet"), str):
        return None
    return (f"metabolomics modality '{modality}' needs 'sample_sheet: PATH' (sample_id, sample_type, batch, "
            "injection_order)")


#: Original-image radiomics (shape, first order, GLCM, GLRLM, GLSZM): ~100 features per scan, fast enough for the CPU
#: demo. For the full set with LoG and wavelet filters (1,118 features) use ``params: configs/features/radiomics.yaml``
#: (an absolute path, or pass ``omics-risk extract --config``).
_RADIOMICS_DEMO = {
    "_target_": "omics_risk.features.radiomics.RadiomicsExtractor",
    "params": {
        "setting": {"binWidth": 25, "resampledPixelSpacing": [2, 2, 2], "interpolator": "sitkBSpline", "label": 1,
                    "voxelArrayShift": 1000, "normalize": False, "additionalInfo": False},
        "imageType": {"Original": {}},
        "featureClass": {"shape": None, "firstorder": None, "glrlm": None, "glszm": None,
                         "glcm": ["Autocorrelation", "ClusterProminence", "ClusterShade", "ClusterTendency",
                                  "Contrast", "Correlation", "DifferenceAverage", "DifferenceEntropy",
                                  "DifferenceVariance", "Id", "Idm", "Idmn", "Idn", "Imc1", "Imc2", "InverseVariance",
                                  "JointAverage", "JointEnergy", "JointEntropy", "MCC", "MaximumProbability",
                                  "SumEntropy", "SumSquares"]},
    },
}

for _fmt in (
    ModalityFormat("image", readers.IMAGE_EXTENSIONS, readers.read_image, file_checks.open_image,
                   (_RADIOMICS_DEMO,), needs_mask=True, default_modalities=("ct",),
                   description="a CT scan (NIfTI, NRRD, MetaImage or a DICOM folder) with its tumour mask"),
    ModalityFormat("fragments", readers.FRAGMENT_EXTENSIONS + readers.BAM_EXTENSIONS, readers.read_fragments,
                   file_checks.open_fragments,
                   ({"_target_": "omics_risk.features.fragmentomics.FragmentomicsExtractor"},),
                   default_modalities=("cfdna",), description="cfDNA fragments (BED-like or BAM), one file a sample"),
    ModalityFormat("bismark_cov", readers.BISMARK_EXTENSIONS, readers.read_bismark_cov, file_checks.open_bismark,
                   ({"_target_": "omics_risk.features.methylation.MethylationExtractor"},),
                   default_modalities=("methylation",), description="Bismark CpG coverage, one file a sample"),
    ModalityFormat("variant_table", readers.TABLE_EXTENSIONS, readers.read_variant_table,
                   file_checks.open_variant_table, ({"_target_": "omics_risk.features.ctdna.CtdnaExtractor"},),
                   shared_file=True, default_modalities=("ctdna",), description="ctDNA variant calls, one table"),
    ModalityFormat("metabolomics_matrix", readers.TABLE_EXTENSIONS, readers.read_metabolomics,
                   file_checks.open_metabolomics,
                   ({"_target_": "omics_risk.features.metabolomics.MetabolomicsExtractor"},),
                   preprocessing="metabolomics", shared_file=True, default_modalities=("metabolomics",),
                   options_problem=_metabolomics_options,
                   description="a feature x injection intensity matrix with its sample sheet"),
    ModalityFormat("table", readers.TABLE_EXTENSIONS, readers.read_table, file_checks.open_table,
                   ({"_target_": "omics_risk.features.tables.TableExtractor"},), shared_file=True,
                   options_problem=partial(readers.columns_problem, "table"),
                   description="a precomputed sample x feature table (RPPA, miRNA, ...)"),
    ModalityFormat("cn_segments", readers.TABLE_EXTENSIONS, readers.read_cn_segments, file_checks.open_cn_segments,
                   ({"_target_": "omics_risk.features.cnv.CnSegmentsExtractor"},), shared_file=True,
                   default_modalities=("cnv",), options_problem=partial(readers.columns_problem, "cn_segments"),
                   description="copy-number segments, one table"),
):
    register_format(_fmt)
del _fmt
