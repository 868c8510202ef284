"""Training: stages, the sharded state, the jitted step, the loop, checkpoints, AOT compiles."""
