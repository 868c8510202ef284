"""mBERT-shaped AMBER (the paper's model): 12 layers, 768 wide, 12 heads, 119,547 vocabulary.

The paper's stage 2: batch of 2,048 pairs, lr 1e-4, 10k warmup, 1M steps.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.data.parallel_batch_size = 2048
  c.data.mono_batch_size = 2048
  c.data.sentence_length = 128
  c.data.mono_length = 256
  return c
