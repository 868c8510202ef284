"""HuggingFace both ways (one name table), and run folders to load, evaluate and export."""
