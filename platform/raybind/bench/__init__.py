"""Benchmarks: every performance claim is a ratio against a baseline measured in the same run."""
