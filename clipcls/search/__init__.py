"""Search, similar and duplicates over the images' embeddings (numpy only: no model import)."""
