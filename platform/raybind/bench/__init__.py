"""Benchmarks: every performance claim is a ratio against a baseline measured in the same run."""

# Ingest suite variants (here, not in bench.ingest, so the job's argument parser needs no Ray import).
SYNTHESIS = ("cpu", "gpu")          # where depth/thermal synthesis runs
SYNTHESIZERS = ("tiny", "full")     # tiny random models, or random ones of LanguageBind's sizes

# The towers with an L/14 recipe (configs/languagebind_<modality>_l14.yaml): the gpu suite times each, and
# the benchmark job judges each one's goals (here, so the job's table needs no torch import).
GPU_RECIPE_MODALITIES = ("video", "audio", "depth", "thermal")
