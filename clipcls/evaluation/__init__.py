"""Evaluation: class folders or a labels CSV, scored and judged as the head calls for, and the
reports made of them (JSON, tables, CSV, HTML)."""
