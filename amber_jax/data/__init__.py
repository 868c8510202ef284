"""Input: the batch contract, seqio mixtures -> numpy batches, the token cache, run inputs."""
