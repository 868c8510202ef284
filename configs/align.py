"""Word alignment on your own sentence pairs: guided by eflomal, trained in minutes on a CPU.

    amber-jax train --config=configs/align.py --config.data.align_pairs=pairs.txt \
        --config.workdir=runs/align
    amber-jax align runs/align --pairs pairs.txt --out pairs.pharaoh

pairs.txt holds pre-tokenised pairs, `source words<TAB>target words` a line (the input of
`amber-jax align`). The run trains a SentencePiece vocabulary on the two sides (once, into the
cache), aligns every pair with eflomal (seconds), and trains a small encoder with guided
alignment: the last layer's attention between the two sentences is pulled towards eflomal's links
(Garg et al. 2019). `amber-jax align` then lets that attention and eflomal vote (`--method
guided`, its default for such a run). docs/EVAL.md has the recipe and what it measured.
"""

from configs import tiny


def get_config():
  c = tiny.get_config()
  c.model.update(max_position_embeddings=128)
  c.data.update(align_pairs='', mono_batch_size=0, parallel_batch_size=32, sentence_length=64,
                pair_packing=False)
  # Guided alignment alone: TLM beside it cost a third of each step and did not help the
  # alignments within the time (docs/EVAL.md). 'full': one pass holds both directions.
  c.objectives.update(mlm_weight=0.0, tlm_weight=0.0, sa_weight=0.0, wa_weight=0.0,
                      guided_weight=1.0, wa_mask='full')
  c.optimizer.update(learning_rate=5e-4, warmup_steps=50)
  c.train.update(steps=1000, log_every=100, checkpoint_every=250)
  return c
