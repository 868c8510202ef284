"""A CPU-sized AMBER for the demo: 4 layers, 256 wide, 4 heads, 8k SentencePiece vocabulary."""

from configs import default


def get_config():
  c = default.get_config()
  c.model.update(vocab_size=8000, hidden_size=256, num_layers=4, num_heads=4,
                 intermediate_size=1024, max_position_embeddings=128, dropout_rate=0.1,
                 attention_dropout_rate=0.1)
  # Sized so that the demo trains in a few minutes on 2 CPU cores: 32 tokens a side cuts ~15%
  # of the Django sentences (their median is 15 pieces) and halves the padding of 64.
  # One input thread: on 2 cores TensorFlow's own pools took a fifth of the step time (200 steps
  # of the demo's first stage: ~3,400 tokens/s with dips to half, ~4,100 steady with one).
  c.data.update(mono_batch_size=16, parallel_batch_size=32, mono_length=32, sentence_length=32,
                input_threads=1)
  c.optimizer.update(learning_rate=5e-4, warmup_steps=20)
  c.train.update(steps=200, log_every=20, checkpoint_every=100)
  # Cosine + temperature, both directions: at this scale it aligns much faster than the paper's
  # plain dot product (the paper's form is sa_cosine=False, sa_temperature=1.0).
  c.objectives.update(sa_cosine=True, sa_temperature=0.05, sa_bidirectional=True)
  return c
