"""Feature extraction: per-modality extractors, fold-fitted preprocessing and the cached feature store."""
