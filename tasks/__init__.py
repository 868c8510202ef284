"""seqio registrations: one module per corpus, each with `register(data_cfg) -> mixture names`.

The trainer imports the module named in `config.data.task_module` (default `tasks.corpus`) and
calls its `register`; see `tasks/corpus.py` for the interface and how to write your own.
"""
