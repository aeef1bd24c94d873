"""Retrieval and classification scores from similarity matrices: one definition for validation during
training and for evaluation (R@k, median and mean rank, top-k accuracy, confusion)."""

from __future__ import annotations

import torch

RECALL_KS = (1, 5, 10)


def _greater_and_tied(similarity: torch.Tensor, targets: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query: how many items score above its correct one, and how many others tie with it exactly."""
    if targets is None:
        targets = torch.arange(similarity.shape[0], device=similarity.device)
    own = similarity.gather(1, targets[:, None])
    greater = (similarity > own).sum(dim=1)
    tied = (similarity == own).sum(dim=1) - 1
    return greater.float(), tied.float()


def ranks(similarity: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Expected 1-based rank of each query's correct item under random tie-breaking: [queries, items]
    scores, `targets` the correct column per query (default: the diagonal). Identical inputs embed
    identically, so exact ties are real (the demo's tones repeat); breaking them by position would flatter
    or punish a model depending on row order."""
    greater, tied = _greater_and_tied(similarity, targets)
    return greater + 1 + tied / 2


def _hit_probability(greater: torch.Tensor, tied: torch.Tensor, k: int) -> torch.Tensor:
    """P(rank <= k) when the correct item's rank is uniform over greater+1 .. greater+1+tied."""
    return ((k - greater) / (tied + 1)).clamp(0, 1)


def recall_at(similarity: torch.Tensor, k: int, targets: torch.Tensor | None = None) -> float:
    """Share of queries whose correct item ranks within the top k (ties shared fairly)."""
    return float(_hit_probability(*_greater_and_tied(similarity, targets), k).mean())


def retrieval_scores(similarity: torch.Tensor, targets: torch.Tensor | None = None) -> dict[str, float]:
    """r1, r5, r10 (shares of queries), median_rank and mean_rank, as papers report retrieval."""
    greater, tied = _greater_and_tied(similarity, targets)
    r = greater + 1 + tied / 2
    scores = {f"r{k}": float(_hit_probability(greater, tied, k).mean()) for k in RECALL_KS}
    scores["median_rank"] = float(r.median())  # torch's median: the lower of the two middle values
    scores["mean_rank"] = float(r.mean())
    scores["queries"] = int(similarity.shape[0])
    scores["items"] = int(similarity.shape[1])
    return scores


def recall_curve(similarity: torch.Tensor, targets: torch.Tensor | None = None, max_k: int = 10) -> list[float]:
    """R@1..R@max_k, for plots."""
    greater, tied = _greater_and_tied(similarity, targets)
    return [float(_hit_probability(greater, tied, k).mean()) for k in range(1, max_k + 1)]


def classification_scores(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """top1 and top5 accuracy of [samples, classes] scores against class indices."""
    greater, tied = _greater_and_tied(logits, targets)
    return {"top1": float(_hit_probability(greater, tied, 1).mean()),
            "top5": float(_hit_probability(greater, tied, 5).mean()),
            "samples": int(logits.shape[0]), "classes": int(logits.shape[1])}


def confusion_matrix(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[classes, classes] counts: row = true class, column = predicted class."""
    classes = logits.shape[1]
    predicted = logits.argmax(dim=1)
    flat = targets * classes + predicted
    return torch.bincount(flat, minlength=classes * classes).reshape(classes, classes)
