"""Heads: the linear probe, and FLM/ILM label mapping (ILM-VP's greedy one-to-one assignment)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lorsp_neuro.backbones import create_backbone
from lorsp_neuro.heads import (
    HeadError,
    LabelMappingHead,
    LinearProbeHead,
    create_head,
    greedy_label_mapping,
    list_heads,
    prediction_counts,
)
from lorsp_neuro.model import PromptedModel
from lorsp_neuro.prompters import create_prompter

FAKE_BACKBONE = SimpleNamespace(num_features=8, num_classes=6)


def _logits_predicting(sources: list[int], num_sources: int = 6) -> torch.Tensor:
    """Logits whose argmax is ``sources[i]`` for sample i."""
    logits = torch.randn(len(sources), num_sources)
    logits[torch.arange(len(sources)), torch.tensor(sources)] = 10.0
    return logits


def test_prediction_counts_is_the_frequency_matrix():
    logits = _logits_predicting([4, 4, 1, 4, 1, 0])
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    counts = prediction_counts(logits, labels, num_targets=3)
    expected = torch.zeros(6, 3, dtype=torch.long)
    expected[4, 0], expected[1, 0], expected[4, 1], expected[1, 1], expected[0, 2] = 2, 1, 1, 1, 1
    assert torch.equal(counts, expected)


def test_greedy_mapping_resolves_conflicts_by_largest_count():
    # target 0 and target 1 both prefer source 4; target 0 has more votes, target 1 takes its next.
    counts = torch.tensor([[0, 0, 3], [0, 2, 0], [0, 0, 0], [0, 0, 0], [5, 4, 0]])
    assert greedy_label_mapping(counts).tolist() == [4, 1, 0]


def test_greedy_mapping_is_one_to_one_even_with_no_votes():
    counts = torch.zeros(10, 4, dtype=torch.long)
    counts[7, :] = 3  # every target prefers source 7
    mapping = greedy_label_mapping(counts)
    assert mapping[0] == 7
    assert len(set(mapping.tolist())) == 4


def test_mapping_needs_enough_source_classes():
    with pytest.raises(HeadError, match="at least as many source classes"):
        greedy_label_mapping(torch.zeros(2, 3))
    with pytest.raises(HeadError, match="the backbone has 6, the dataset 7"):
        create_head("flm", FAKE_BACKBONE, 7)


def test_label_mapping_head_before_fitting_is_a_clear_error():
    head = create_head("flm", FAKE_BACKBONE, 3)
    with pytest.raises(HeadError, match="call update_mapping"):
        head(torch.randn(2, 6))


def test_label_mapping_head_selects_the_mapped_source_logits():
    head = create_head("flm", FAKE_BACKBONE, 3)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    head.update_mapping(
        _logits_predicting([5, 5, 2, 2, 3, 0, 3]), torch.cat([labels, torch.tensor([2])])
    )
    assert head.mapping.tolist() == [5, 2, 3]
    logits = torch.randn(4, 6)
    assert torch.equal(head(logits), logits[:, [5, 2, 3]])
    assert sum(p.numel() for p in head.parameters()) == 0


def test_ilm_remaps_when_the_predictions_change_and_flm_says_it_does_not():
    ilm, flm = create_head("ilm", FAKE_BACKBONE, 2), create_head("flm", FAKE_BACKBONE, 2)
    assert ilm.remaps_each_epoch and not flm.remaps_each_epoch
    labels = torch.tensor([0, 0, 1, 1])
    ilm.update_mapping(_logits_predicting([1, 1, 3, 3]), labels)
    assert ilm.mapping.tolist() == [1, 3]
    ilm.update_mapping(_logits_predicting([4, 4, 0, 3]), labels)
    assert ilm.mapping.tolist() == [4, 0]


def test_mapping_survives_a_state_dict_round_trip():
    head = create_head("ilm", FAKE_BACKBONE, 2)
    head.update_mapping(_logits_predicting([5, 5, 2]), torch.tensor([0, 0, 1]))
    restored = create_head("ilm", FAKE_BACKBONE, 2)
    restored.load_state_dict(head.state_dict())
    assert restored.mapping.tolist() == [5, 2]
    restored(torch.randn(1, 6))  # fitted flag restored too


def test_bad_mapping_inputs_are_rejected():
    head = create_head("flm", FAKE_BACKBONE, 2)
    with pytest.raises(HeadError, match="expected 6 source logits"):
        head.update_mapping(torch.randn(3, 5), torch.tensor([0, 1, 0]))
    with pytest.raises(HeadError, match=r"labels must lie in \[0, 2\)"):
        head.update_mapping(torch.randn(3, 6), torch.tensor([0, 1, 2]))
    with pytest.raises(HeadError, match="expected logits"):
        head.update_mapping(torch.randn(3, 6), torch.tensor([0, 1]))


def test_linear_probe_head():
    head = create_head("lp", FAKE_BACKBONE, 3)
    assert isinstance(head, LinearProbeHead) and head.input_kind == "features"
    assert sum(p.numel() for p in head.parameters()) == 8 * 3 + 3
    assert head(torch.randn(5, 8)).shape == (5, 3)


def test_unknown_head_and_bad_class_count():
    assert list_heads() == ["flm", "ilm", "lp"]
    with pytest.raises(HeadError, match="unknown head 'ilmvp'; known heads: flm, ilm, lp"):
        create_head("ilmvp", FAKE_BACKBONE, 3)
    with pytest.raises(HeadError, match="num_classes must be a positive int"):
        create_head("lp", FAKE_BACKBONE, 0)


def test_prompted_model_fits_the_mapping_from_the_prompted_backbone():
    backbone = create_backbone("test_resnet", image_size=16)
    prompter = create_prompter("full_dense", 16, init_std=0.5)
    model = PromptedModel(prompter, backbone, create_head("ilm", backbone, 4))
    images, labels = torch.rand(12, 3, 16, 16), torch.arange(12) % 4
    model.train()
    model.update_label_mapping([(images[:6], labels[:6]), (images[6:], labels[6:])])
    assert model.prompter.training  # restored after the no-grad pass
    with torch.no_grad():
        source = backbone(images + prompter.prompt)
    reference = LabelMappingHead(1000, 4, remaps_each_epoch=True)
    reference.update_mapping(source, labels)
    assert torch.equal(model.head.mapping, reference.mapping)
    logits, _ = model(images)
    assert torch.allclose(logits, source[:, reference.mapping], atol=1e-5)
    groups = model.param_groups(prompt_lr=0.1, head_lr=0.01)
    assert [g["name"] for g in groups] == ["prompter.full_dense"]  # a mapping has nothing to train
