"""Label runs: a tree of images to rows on disk, resumable, files sorted by label; and predict,
the same rows streamed to a writer."""
