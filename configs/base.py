"""mBERT-shaped AMBER (the paper's model): 12 layers, 768 wide, 12 heads, 119,547 vocabulary.

The paper's stage 2: batch of 2,048 pairs, lr 1e-4, 10k warmup, 1M steps.

For accelerators the layers run as one scan with remat 'dots' (`model.scan_layers`,
`model.remat`). Per device at 32 mono rows x 256 + 32 pairs x 2 x 128, on fsdp=8, XLA's memory
analysis gives 20 GiB of temporaries against 69 GiB unrolled without remat, and the step compiles
twice as fast (docs/PERFORMANCE.md). Results equal the unrolled path's (tests/test_model_options.py).
Set --config.model.scan_layers=False --config.model.remat=none for the reference path.

Compute is bfloat16 with float32 master weights (`model.dtype`): parameters, optimizer state,
attention scores and softmax, LayerNorm statistics, the MLM logits and the SA pooling and
similarities stay float32 (amber_jax.core.model, amber_jax.core.losses); --config.model.dtype=float32
for full precision. Translation pairs are packed several to a row (`data.pair_packing`, the
default), so `parallel_batch_size` counts rows of 2 x 128 tokens.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.data.parallel_batch_size = 2048
  c.data.mono_batch_size = 2048
  c.data.sentence_length = 128
  c.data.mono_length = 256
  c.model.scan_layers = True
  c.model.remat = 'dots'
  c.model.dtype = 'bfloat16'
  return c
