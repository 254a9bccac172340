"""Outputs: rows and their columns, writers per format, output files, and resuming label runs."""
