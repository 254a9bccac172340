"""Multi-label answers: an independent probability per label (SigLIP's own sigmoid, or a
documented score for softmax-trained CLIP models), and the metrics that judge them."""
