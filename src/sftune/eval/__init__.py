"""Evaluation: metrics (and, later, reports)."""

from .metrics import HEADLINE, classification_metrics

__all__ = ["HEADLINE", "classification_metrics"]
