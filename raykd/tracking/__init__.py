"""Experiment tracking with MLflow: runs, lineage and plots."""

from raykd.tracking.mlflow_tracking import StepMetricsCallback, Tracker, resolve_tracking_uri

__all__ = ["StepMetricsCallback", "Tracker", "resolve_tracking_uri"]
