"""raykd: cluster-scale knowledge distillation for neural retrieval on Ray."""

__version__ = "0.1.0"
