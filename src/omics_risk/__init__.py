"""omics-risk: multi-omics recurrence-risk modelling for lung cancer.

Per-modality encoders (CT, cfDNA fragmentomics and methylation, ctDNA, metabolomics, clinical) fused into
survival models, configured with Hydra, tracked in MLflow and scored in batch on new cohorts.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
