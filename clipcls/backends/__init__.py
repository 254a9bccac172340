"""Where predictions come from: one Backend protocol, and a registry of its implementations."""
