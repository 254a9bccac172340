"""Evaluation: a dataset of class folders, its scoring and metrics, and the reports made of them."""
