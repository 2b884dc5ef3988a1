r"""Heads from the frozen backbone to the target classes: a linear probe or a label mapping.

=======  ======================================================================================
kind     what it does
=======  ======================================================================================
``lp``   a trainable linear layer on the backbone's pooled features
``flm``  frequency label mapping: each target class takes the source class the (unprompted)
         model predicts most often for it on the training data; computed once, then frozen
``ilm``  iterative label mapping (ILM-VP, CVPR 2023): the same mapping recomputed from the
         *prompted* model at the start of every epoch (the training loop calls
         :meth:`LabelMappingHead.update_mapping`)
=======  ======================================================================================

Both mappings are one-to-one, assigned greedily as ILM-VP does (:func:`greedy_label_mapping`).
A head says what it reads with ``input_kind``: ``"features"`` or ``"logits"`` (source classes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lorsp_neuro.errors import LorspError


class HeadError(LorspError):
    """A head cannot be built or used (unknown kind, unfitted mapping, too few source classes)."""


def prediction_counts(source_logits: torch.Tensor, labels: torch.Tensor, num_targets: int):
    r"""Frequency matrix :math:`N_{st} = \#\{i : \arg\max_j z_{ij} = s,\ y_i = t\}`, ``(S, T)``.

    ``source_logits`` is ``(N, S)``, ``labels`` ``(N,)`` with values in ``[0, num_targets)``.
    """
    if source_logits.dim() != 2 or labels.shape != source_logits.shape[:1]:
        raise HeadError(
            f"label mapping: expected logits (N, S) and labels (N,), got "
            f"{tuple(source_logits.shape)} and {tuple(labels.shape)}"
        )
    labels = labels.long().cpu()
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_targets):
        raise HeadError(
            f"label mapping: labels must lie in [0, {num_targets}), got {labels.unique().tolist()}"
        )
    predicted = source_logits.detach().argmax(dim=1).cpu()
    counts = torch.zeros(source_logits.shape[1], num_targets, dtype=torch.long)
    counts.index_put_((predicted, labels), torch.ones_like(labels), accumulate=True)
    return counts


def greedy_label_mapping(counts: torch.Tensor) -> torch.Tensor:
    r"""One-to-one target → source mapping from a frequency matrix ``(S, T)`` (ILM-VP's greedy).

    Repeatedly take the largest remaining entry :math:`N_{st}`, map target t to source s, and
    remove row s and column t, until every target has a source. Returns ``(T,)`` source indices.
    Ties go to the lowest flat index, so the result is deterministic.
    """
    num_sources, num_targets = counts.shape
    if num_sources < num_targets:
        raise HeadError(
            f"label mapping needs at least as many source classes as target classes, "
            f"got {num_sources} < {num_targets}"
        )
    remaining = counts.to(torch.float64).clone()
    mapping = torch.full((num_targets,), -1, dtype=torch.long)
    for _ in range(num_targets):
        flat = int(remaining.argmax())
        source, target = divmod(flat, num_targets)
        mapping[target] = source
        remaining[source, :] = -1.0
        remaining[:, target] = -1.0
    return mapping


class LinearProbeHead(nn.Module):
    """``lp``: a linear classifier on the pooled features (trainable)."""

    input_kind = "features"
    remaps_each_epoch = False

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(num_features, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


class LabelMappingHead(nn.Module):
    """``flm``/``ilm``: target logit t is the source logit of ``mapping[t]``; nothing trainable.

    ``update_mapping(source_logits, labels)`` refits the mapping from the backbone's source-class
    logits on (a pass over) the training data; ``remaps_each_epoch`` tells the training loop
    whether to call it every epoch (ILM) or once before training (FLM).
    """

    input_kind = "logits"

    def __init__(self, num_sources: int, num_classes: int, *, remaps_each_epoch: bool):
        super().__init__()
        if num_sources < num_classes:
            raise HeadError(
                f"label mapping needs at least as many source classes as targets: the backbone "
                f"has {num_sources}, the dataset {num_classes}"
            )
        self.num_sources = num_sources
        self.num_classes = num_classes
        self.remaps_each_epoch = remaps_each_epoch
        self.register_buffer("mapping", torch.arange(num_classes))
        self.register_buffer("fitted", torch.tensor(False))

    def update_mapping(self, source_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Refit the mapping from ``(N, S)`` source logits and ``(N,)`` labels; returns it."""
        if source_logits.shape[-1] != self.num_sources:
            raise HeadError(
                f"label mapping: expected {self.num_sources} source logits, got {source_logits.shape[-1]}"
            )
        mapping = greedy_label_mapping(prediction_counts(source_logits, labels, self.num_classes))
        self.mapping.copy_(mapping.to(self.mapping.device))
        self.fitted.fill_(True)
        return self.mapping

    def forward(self, source_logits: torch.Tensor) -> torch.Tensor:
        if not bool(self.fitted):
            raise HeadError(
                "label-mapping head used before its mapping was computed: call "
                "update_mapping(source_logits, labels) on training data first"
            )
        return source_logits[:, self.mapping]


def _linear_probe(backbone, num_classes: int) -> nn.Module:
    return LinearProbeHead(backbone.num_features, num_classes)


def _frequency_mapping(backbone, num_classes: int) -> nn.Module:
    return LabelMappingHead(backbone.num_classes, num_classes, remaps_each_epoch=False)


def _iterative_mapping(backbone, num_classes: int) -> nn.Module:
    return LabelMappingHead(backbone.num_classes, num_classes, remaps_each_epoch=True)


#: Head kind → builder ``(backbone, num_classes) -> head``.
HEAD_BUILDERS: dict[str, Callable[[Any, int], nn.Module]] = {
    "lp": _linear_probe,
    "flm": _frequency_mapping,
    "ilm": _iterative_mapping,
}


def list_heads() -> list[str]:
    return sorted(HEAD_BUILDERS)


def create_head(kind: str, backbone, num_classes: int) -> nn.Module:
    """A head of ``kind`` (``lp``, ``flm``, ``ilm``) for ``backbone`` and ``num_classes`` targets."""
    if kind not in HEAD_BUILDERS:
        raise HeadError(f"unknown head {kind!r}; known heads: {', '.join(list_heads())}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise HeadError(f"head {kind!r}: num_classes must be a positive int, got {num_classes!r}")
    return HEAD_BUILDERS[kind](backbone, num_classes)
