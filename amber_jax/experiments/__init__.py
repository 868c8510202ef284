"""End-to-end runs built from the library: the demo and the objective ablation."""
