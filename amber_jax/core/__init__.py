"""The model and its math: the Flax encoder, masking, the pure losses, the objectives registry."""
