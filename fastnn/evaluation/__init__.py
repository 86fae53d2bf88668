"""Evaluation: a trained model's metrics (metrics) and its figures and report (report)."""
