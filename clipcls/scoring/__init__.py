"""How an embedding becomes an answer: heads, one Scorer, and build_scorer(spec), the one place
a run's labels, templates, support set, calibration and mode are put together."""
