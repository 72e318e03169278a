"""Workflows: the jobs a user runs, built from the layers below.

``training`` cross-validates and fits the models of a ``train.py`` run, ``external`` validates a logged model on a
new cohort (``evaluate.py mode=external``) and ``scoring`` scores a cohort in batch (``omics-risk score``).
"""
