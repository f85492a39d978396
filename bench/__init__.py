"""bench: train and compare image-classifier variants, tracked in MLflow, searched with Optuna."""

__version__ = "0.1.0"
