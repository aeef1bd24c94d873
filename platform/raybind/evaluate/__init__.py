"""Evaluation stage: checkpoints in, embeddings, retrieval and zero-shot scores out.

`embed` is the in-process embedding API; `inference` streams a manifest through an actor pool that holds
the model; `tasks` runs zero-shot retrieval and classification on it; `corpus` embeds and queries a
collection; `datasets` builds evaluation sets from their published layouts; `settings` decodes as the
checkpoint's training did; `prompts` and `report` format classes and results.
"""

# The evaluation tasks `raybind evaluate --task` chooses from (here, so the command's help needs no Ray import).
TASKS = ("retrieval", "classification", "emergent", "arithmetic", "anchor")
