"""Zero-shot class embeddings: prompt templates per modality, and each class as the renormalised mean of
its prompts' text embeddings (CLIP's prompt ensembling; LanguageBind words the prompts per modality,
e.g. "a sound of {}." for audio and depth-photo phrasings for depth)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from encoders.modalities import REGISTRY
from raybind.errors import InputError

TEMPLATES: dict[str, tuple[str, ...]] = {name: kind.prompts for name, kind in REGISTRY.items()}


def templates_for(modality: str, overrides: Mapping[str, Sequence[str]] | None = None) -> tuple[str, ...]:
    """The prompt templates of a modality (`overrides` win); each must contain one `{}` for the class name."""
    chosen = tuple((overrides or {}).get(modality) or TEMPLATES[modality])
    bad = [t for t in chosen if t.count("{}") != 1]
    if bad:
        raise InputError(f"templates for {modality} must each contain one '{{}}' for the class name: {bad}")
    return chosen


def class_embeddings(classes: Sequence[str], templates: Sequence[str],
                     embed_text: Callable[[list[str]], torch.Tensor]) -> torch.Tensor:
    """[classes, D]: per class, the mean of its normalised prompt embeddings, normalised again."""
    prompts = [t.format(c) for c in classes for t in templates]
    embedded = F.normalize(embed_text(prompts).float(), dim=-1).reshape(len(classes), len(templates), -1)
    return F.normalize(embedded.mean(dim=1), dim=-1)
