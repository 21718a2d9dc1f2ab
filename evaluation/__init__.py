"""Offline quality evaluation: protocols (splits, replay), metrics tables, baselines and tuning.

Importable by ``learn`` and the CLI without pulling in the speed benchmarks of
``bench``: :mod:`evaluation.harness` (protocols, learners, reports and plots),
:mod:`evaluation.baselines` (SAR, EASE, ALS, BPR, popularity) and
:mod:`evaluation.tune` (validation-split tuning).  The pure maths - splits and
metrics - lives in :mod:`transforms.splits` and :mod:`transforms.metrics`.
"""
