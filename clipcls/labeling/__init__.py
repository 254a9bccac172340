"""Label runs: a tree of images to rows on disk, resumable, files sorted by label."""
