"""Benchmarks: every performance claim is a ratio against a baseline measured in the same run."""

# Ingest suite variants (here, not in bench.ingest, so the job's argument parser needs no Ray import).
SYNTHESIS = ("cpu", "gpu")          # where depth/thermal synthesis runs
SYNTHESIZERS = ("tiny", "full")     # tiny random models, or random ones of LanguageBind's sizes
