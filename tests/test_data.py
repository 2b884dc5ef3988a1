"""Datasets: every source loads offline with the right shapes, labels and disjoint seeded splits."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lorsp_neuro.data import (
    DatasetError,
    ImageSet,
    RawDataset,
    dataset_source,
    list_datasets,
    load_dataset,
    read_cifar_pickle,
    read_idx,
    texture_patches,
    to_model_input,
)

# name → (classes, images in the whole source, has an official test split)
OFFLINE_SOURCES = {
    "fashion_mnist": (10, 70_000, True),
    "mnist5k": (10, 5_000, False),
    "digits": (10, 1_797, False),
    "textures": (3, 192, False),
    "lfw": (2, 200, False),
}


def _keys(images: ImageSet) -> set[tuple[str, int]]:
    return {(images.origin, int(i)) for i in images.indices}


def _assert_disjoint(splits) -> None:
    train, val, test = _keys(splits.train), _keys(splits.val), _keys(splits.test)
    assert not (train & val) and not (train & test) and not (val & test)


def test_every_registered_dataset_is_covered_here():
    assert set(list_datasets()) == set(OFFLINE_SOURCES) | {"imagefolder", "cifar10", "cifar100"}


@pytest.mark.parametrize("name", sorted(OFFLINE_SOURCES))
def test_offline_dataset_loads_with_disjoint_seeded_splits(name):
    classes, total, official_test = OFFLINE_SOURCES[name]
    splits = load_dataset(name, train_size=60, val_size=20, test_size=30, image_size=24, seed=3)
    assert splits.sizes() == {"train": 60, "val": 20, "test": 30}
    assert splits.num_classes == classes
    for part in (splits.train, splits.val, splits.test):
        x, y = part.batch(slice(0, 7))
        assert x.shape == (7, 3, 24, 24) and x.dtype == torch.float32
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.max()) > 0.0
        assert (
            y.dtype == torch.int64
            and 0 <= int(part.labels.min()) <= int(part.labels.max()) < classes
        )
        assert part.images.dtype == torch.uint8 and part.images.shape[1] in (1, 3)
    _assert_disjoint(splits)
    assert splits.test.origin.endswith("/test" if official_test else "/train")
    again = load_dataset(name, train_size=60, val_size=20, test_size=30, image_size=24, seed=3)
    other = load_dataset(name, train_size=60, val_size=20, test_size=30, image_size=24, seed=4)
    assert torch.equal(again.train.indices, splits.train.indices)
    assert torch.equal(again.train.images, splits.train.images)
    assert not torch.equal(other.train.indices, splits.train.indices)
    # Default sizes use every image of the source exactly once.
    full = load_dataset(name, image_size=8)
    assert sum(full.sizes().values()) == total
    _assert_disjoint(full)


def test_fashion_mnist_is_the_full_debian_set_with_its_official_test_split():
    full = load_dataset("fashion_mnist", val_size=5_000, image_size=28)
    assert full.sizes() == {"train": 55_000, "val": 5_000, "test": 10_000}
    assert full.class_names[0] == "t-shirt/top" and full.class_names[9] == "ankle boot"
    assert np.bincount(full.test.labels.numpy()).tolist() == [1_000] * 10
    # At the native size the batch is the stored image itself (no resampling), replicated.
    x, _ = full.test.batch(slice(0, 1))
    raw = full.test.images[0, 0].float() / 255
    assert torch.equal(x[0, 0], raw) and torch.equal(x[0, 2], raw)


def test_lfw_and_textures_labels_follow_their_sources():
    lfw = load_dataset("lfw", image_size=25)
    everything = torch.cat([lfw.train.labels, lfw.val.labels, lfw.test.labels])
    assert torch.bincount(everything).tolist() == [100, 100]
    textures = load_dataset("textures", patch_size=32, image_size=32)
    assert sum(textures.sizes().values()) == 3 * 16 * 16
    assert textures.class_names == ("brick", "grass", "gravel")


def test_texture_patches_tile_without_overlap():
    texture = np.arange(8 * 12, dtype=np.uint8).reshape(8, 12)
    patches = texture_patches(texture, 4)
    assert patches.shape == (6, 1, 4, 4)
    assert np.array_equal(patches[1, 0], texture[0:4, 4:8])
    assert np.array_equal(np.sort(patches.ravel()), np.sort(texture.ravel()))


def test_to_model_input_replicates_grey_scales_and_resizes():
    grey = torch.tensor([[[[0, 255], [255, 0]]]], dtype=torch.uint8)
    x = to_model_input(grey, 2)
    assert x.shape == (1, 3, 2, 2) and torch.equal(x[0, 0], torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    assert torch.equal(x[0, 0], x[0, 1]) and torch.equal(x[0, 1], x[0, 2])
    up = to_model_input(grey, 8)
    assert up.shape == (1, 3, 8, 8) and float(up.min()) >= 0.0 and float(up.max()) <= 1.0
    down = to_model_input(torch.full((2, 3, 64, 64), 255, dtype=torch.uint8), 16)
    assert torch.allclose(down, torch.ones(2, 3, 16, 16))


def test_too_large_a_request_unknown_names_and_options_are_clear_errors():
    with pytest.raises(DatasetError, match=r"'digits' has .* asks for"):
        load_dataset("digits", train_size=2_000, image_size=8)
    with pytest.raises(DatasetError, match=r"unknown dataset 'mnist'.*fashion_mnist"):
        load_dataset("mnist")
    with pytest.raises(DatasetError, match="no option patch_size"):
        load_dataset("digits", patch_size=4)
    with pytest.raises(DatasetError, match="needs a path"):
        load_dataset("imagefolder")
    with pytest.raises(DatasetError, match="train_size must be >= 0"):
        load_dataset("digits", train_size=-1)


def test_float_images_with_nan_are_rejected():
    images = torch.rand(4, 1, 8, 8)
    images[2, 0, 3, 3] = float("nan")
    with pytest.raises(DatasetError, match="mine/train image 12 has NaN"):
        ImageSet(images, torch.zeros(4, dtype=torch.long), 8, torch.arange(10, 14), "mine/train")
    with pytest.raises(DatasetError, match=r"not in \[0, 1\]"):
        ImageSet(images.nan_to_num() * 3, torch.zeros(4, dtype=torch.long), 8, torch.arange(4), "x")


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST files


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_from_another_directory_and_its_errors(tmp_path):
    rng = np.random.default_rng(0)
    for kind, n in (("train", 30), ("t10k", 12)):
        _write_idx(tmp_path / f"{kind}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{kind}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    splits = load_dataset("fashion_mnist", path=tmp_path, val_size=5, image_size=28)
    assert splits.sizes() == {"train": 25, "val": 5, "test": 12}
    assert np.array_equal(
        splits.test.images[:, 0].numpy(), read_idx(tmp_path / "t10k-images-idx3-ubyte.gz")
    )
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion_mnist", path=tmp_path)
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as fh:
        fh.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 12) + b"\x01" * 5)  # cut short
    with pytest.raises(DatasetError, match="promises 12 bytes"):
        load_dataset("fashion_mnist", path=tmp_path)
    (tmp_path / "junk.gz").write_bytes(b"not gzip")
    with pytest.raises(DatasetError, match=r"junk\.gz"):
        read_idx(tmp_path / "junk.gz")


# ---------------------------------------------------------------------------------------------
# Image folders


def _write_png(path: Path, size: tuple[int, int], value: int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 0, 255 - value)).save(path)


def test_imagefolder_reads_classes_from_subfolders_at_the_training_size(tmp_path):
    for i in range(6):
        _write_png(tmp_path / "cat" / f"{i}.png", (40, 30), 10 * i)
        _write_png(tmp_path / "dog" / f"{i}.jpg", (17, 50), 200, mode="L")
    (tmp_path / "dog" / "notes.txt").write_text("ignored")
    splits = load_dataset(
        "imagefolder", path=tmp_path, train_size=6, val_size=2, test_size=4, image_size=16
    )
    assert splits.class_names == ("cat", "dog")
    assert splits.train.images.shape == (6, 3, 16, 16)
    _assert_disjoint(splits)
    labels = torch.cat([splits.train.labels, splits.val.labels, splits.test.labels])
    assert torch.bincount(labels).tolist() == [6, 6]
    x, y = splits.test.batch(slice(None))
    red = x[:, 0].mean(dim=(1, 2))
    assert torch.all((red[y == 1] - 200 / 255).abs() < 0.02)  # grey 200 → (200, 200, 200)


def test_imagefolder_with_train_and_test_folders_and_its_errors(tmp_path):
    for split, n in (("train", 5), ("test", 3)):
        for name in ("a", "b"):
            for i in range(n):
                _write_png(tmp_path / split / name / f"{i}.png", (8, 8), 50 * i)
    splits = load_dataset("imagefolder", path=tmp_path, val_size=2, image_size=8)
    assert splits.sizes() == {"train": 8, "val": 2, "test": 6}
    assert splits.test.origin == "imagefolder/test"
    (tmp_path / "test" / "c").mkdir()
    with pytest.raises(DatasetError, match=r"classes .*'c'.* but the training folder has"):
        load_dataset("imagefolder", path=tmp_path, image_size=8)
    empty = tmp_path / "empty"
    (empty / "only").mkdir(parents=True)
    with pytest.raises(DatasetError, match="holds no images"):
        load_dataset("imagefolder", path=empty)
    (empty / "only" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"cannot read image .*bad\.png"):
        load_dataset("imagefolder", path=empty)
    with pytest.raises(DatasetError, match="is not a directory"):
        load_dataset("imagefolder", path=tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------
# CIFAR in the official python-pickle format


def _pickle_dump(path: Path, payload: dict, protocol: int = 2) -> None:
    with open(path, "wb") as fh:
        pickle.dump(payload, fh, protocol=protocol)


def _fake_cifar_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def _write_fake_cifar10(root: Path, per_batch: int = 4, test: int = 5) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    # Bytes keys and protocol 2, as the official Python-2-written files have.
    for i in range(1, 6):
        _pickle_dump(
            folder / f"data_batch_{i}",
            {
                b"data": _fake_cifar_images(per_batch, i),
                b"labels": [(i + j) % 10 for j in range(per_batch)],
            },
        )
    _pickle_dump(
        folder / "test_batch", {b"data": _fake_cifar_images(test, 99), b"labels": list(range(test))}
    )
    names = [
        b"airplane",
        b"automobile",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"truck",
    ]
    _pickle_dump(folder / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    return folder


def test_cifar10_from_a_local_copy_in_the_official_format(tmp_path):
    _write_fake_cifar10(tmp_path)
    splits = load_dataset("cifar10", path=tmp_path, val_size=4, image_size=32)  # parent dir works
    assert splits.sizes() == {"train": 16, "val": 4, "test": 5}
    assert splits.class_names[1] == "automobile"
    _assert_disjoint(splits)
    # Row-major 3×32×32: the first 1024 bytes are the red plane.
    expected = _fake_cifar_images(5, 99).reshape(5, 3, 32, 32)
    assert np.array_equal(splits.test.images.numpy(), expected)
    assert splits.test.labels.tolist() == [0, 1, 2, 3, 4]


def test_cifar100_uses_fine_labels_and_numpy2_pickles_load_too(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    images = _fake_cifar_images(6, 1)
    _pickle_dump(
        folder / "train",
        {"data": images, "fine_labels": [0, 5, 99, 1, 2, 3], "coarse_labels": [0] * 6},
        5,
    )
    _pickle_dump(folder / "test", {"data": images[:2], "fine_labels": [7, 8]}, 5)
    _pickle_dump(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)]}, 5)
    splits = load_dataset("cifar100", path=folder, val_size=1, image_size=16)
    assert splits.num_classes == 100 and splits.sizes() == {"train": 5, "val": 1, "test": 2}
    assert splits.test.labels.tolist() == [7, 8]


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch EXPLOITED",))


def test_a_cifar_pickle_naming_any_other_global_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = _write_fake_cifar10(tmp_path)
    _pickle_dump(folder / "test_batch", {b"data": _Exploit(), b"labels": [0]})
    with pytest.raises(
        DatasetError,
        match=r"test_batch: not a CIFAR batch file: refusing to load global (posix|os)\.system",
    ):
        load_dataset("cifar10", path=folder)
    assert not (tmp_path / "EXPLOITED").exists()
    _pickle_dump(folder / "test_batch", [1, 2, 3])
    with pytest.raises(DatasetError, match="holds a list"):
        read_cifar_pickle(folder / "test_batch")


def test_missing_cifar_says_how_to_get_it(tmp_path):
    with pytest.raises(
        DatasetError, match=r"cifar10 needs a local copy: download cifar-10-python\.tar\.gz"
    ):
        dataset_source("cifar10").loader(None, 32)
    with pytest.raises(DatasetError, match=r"holds no batches\.meta"):
        load_dataset("cifar10", path=tmp_path)
    folder = _write_fake_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3 is missing"):
        load_dataset("cifar10", path=folder)
    with pytest.raises(DatasetError, match=r"cifar-100-python\.tar\.gz"):
        load_dataset("cifar100", path=tmp_path)


def test_raw_dataset_checks_shapes_and_labels(monkeypatch):
    from lorsp_neuro import data

    def bad_labels(path, image_size):
        return RawDataset(np.zeros((4, 1, 8, 8), np.uint8), np.array([0, 1, 2, 3]), ("a", "b"))

    monkeypatch.setitem(
        data._SOURCES, "bad", data.DatasetSource("bad", bad_labels, "test", False, False)
    )
    with pytest.raises(DatasetError, match=r"labels must lie in \[0, 2\)"):
        load_dataset("bad")
