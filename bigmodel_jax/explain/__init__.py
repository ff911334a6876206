"""Interpretability: `python -m bigmodel_jax.explain` (see __main__.py) and docs/interpretability.md."""
