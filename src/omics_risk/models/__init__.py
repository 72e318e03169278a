"""Survival and response models: the fused multimodal network, its parts, and the baselines it must beat."""
