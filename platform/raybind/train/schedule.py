"""Which tower trains at each step: smooth weighted round-robin, deterministic from the step number.

Every worker computes the same sequence (DDP needs all ranks on the same tower at each step), a resumed
run continues it from the restored step, and the shares match the configured weights exactly over time.
"""

from __future__ import annotations

from collections.abc import Mapping


def modality_sequence(weights: Mapping[str, float], steps: int, start: int = 0) -> list[str]:
    """The modality trained at steps `start .. start + steps - 1`."""
    if not weights or any(w <= 0 for w in weights.values()):
        raise ValueError(f"tower weights must be positive, got {dict(weights)}")
    names = sorted(weights)
    total = sum(weights.values())
    current = {name: 0.0 for name in names}
    sequence = []
    for _ in range(start + steps):
        for name in names:
            current[name] += weights[name]
        chosen = max(names, key=lambda n: (current[n], -names.index(n)))
        current[chosen] -= total
        sequence.append(chosen)
    return sequence[start:]
