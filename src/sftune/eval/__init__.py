"""Evaluation: metrics (and, later, reports)."""

from .metrics import HEADLINE, classification_metrics, evaluate_logits

__all__ = ["HEADLINE", "classification_metrics", "evaluate_logits"]
