"""Text: SentencePiece training, the one tokenizer loader (SP file or HF folder), framing."""
