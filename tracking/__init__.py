"""Experiment tracking with MLflow: run hierarchy, metrics, figures, compute cost."""
