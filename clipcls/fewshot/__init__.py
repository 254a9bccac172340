"""Better answers from a few examples: support sets (a training-free cache model over example
embeddings, Tip-Adapter style) and calibrated confidence (a temperature and per-label
thresholds fitted on labeled images)."""
