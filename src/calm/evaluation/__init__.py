"""Evaluation: metrics, zero-shot answer mapping, the experiment protocol and reports."""
