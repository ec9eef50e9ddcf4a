"""Ensembles of training runs: cross-validation folds and seeds (``medseg train --folds/--seeds``),
each member a full training run nested under one MLflow parent run."""
