"""Training stage: Ray Train workers over the data stream, and Ray Tune sweeps over runs.

`trainer` prepares, fits and summarizes a run; `loop` is the one per-worker loop (it calls
`encoders.step.training_step`); `worker_model` builds what a worker trains; `plan` and `memory_estimate`
answer "will it fit" before anything starts; `stages`, `schedule`, `validation` and `state` are the loop's
parts; `sweep` runs one training run per Tune trial.
"""
