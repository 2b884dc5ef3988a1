r"""Pictures of a trained prompter: what it adds to an image, how its neurons fire, how sparse it is.

:func:`visualize_run` reads a run directory written by ``lorsp train`` and draws, with matplotlib's
Agg renderer (no display needed, and pyplot's global backend is left alone):

- ``prompts.png``, one row per test image: the image, the prompt, the prompted image (what the
  frozen backbone is given, shown clipped to [0, 1]) and, for a spiking prompter, a raster of the
  gate neurons and the pixel neurons' spike count per time step (ON population up, OFF down);
- ``sparsity.png``: a histogram over the test split of each image's prompt sparsity (the fraction
  of its prompt entries that are exactly zero).

A spiking prompter's prompt panel shows which population fired, not the signed prompt: red where
ON neurons fire, blue where OFF neurons do (:func:`on_off_balance`). The sign a population adds is
``alpha`` of its channel, which may be negative, so "ON" means "the positive-factor population",
as DVS polarities do. A prompter without spikes (``lor_vp``, ``vp_pad`` …) gets its signed prompt
instead, red positive and blue negative.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lorsp_neuro.errors import LorspError

PROMPTS_FILE = "prompts.png"
SPARSITY_FILE = "sparsity.png"
#: More rows than this make the picture unreadable; draw several pictures instead.
MAX_IMAGES = 32
ON_COLOUR, OFF_COLOUR = "#d62728", "#1f5fbf"


class VisualizeError(LorspError, ValueError):
    """A picture cannot be drawn: bad image count, a prompter without a prompt, too few images."""


# --------------------------------------------------------------------------------------------
# Pure functions


def on_off_balance(on: np.ndarray, off: np.ndarray) -> np.ndarray:
    r"""Per pixel, how much more the ON population fired than the OFF one, in [-1, 1].

    .. math::
        b(h, w) = \frac{1}{T C} \sum_{t, c} \big(s_{on}(t, c, h, w) - s_{off}(t, c, h, w)\big)

    for spike trains ``(T, C, H, W)``; 1 where every ON neuron of the pixel fires at every step,
    -1 likewise for OFF, 0 where neither fires (or both equally).
    """
    on, off = np.asarray(on, np.float64), np.asarray(off, np.float64)
    return on.mean(axis=(0, 1)) - off.mean(axis=(0, 1))


def channel_mean(prompt: np.ndarray) -> np.ndarray:
    r"""``(C, H, W) → (H, W)``: :math:`\bar p(h, w) = \frac1C \sum_c p(c, h, w)`."""
    return np.asarray(prompt, np.float64).mean(axis=0)


def per_image_sparsity(prompt: torch.Tensor) -> np.ndarray:
    r"""``(B, C, H, W) → (B,)``: each prompt's fraction of entries exactly zero,
    :math:`\sigma_b = \#\{(c, h, w) : p_b(c, h, w) = 0\} / (C H W)`."""
    flat = prompt.detach().flatten(1)
    return (flat == 0).double().mean(dim=1).cpu().numpy()


def spikes_per_step(spikes: np.ndarray) -> np.ndarray:
    r"""``(T, …) → (T,)``: spikes of a whole population at each step, :math:`n(t) = \sum_i s_i(t)`."""
    spikes = np.asarray(spikes)
    return spikes.reshape(spikes.shape[0], -1).sum(axis=1)


# --------------------------------------------------------------------------------------------
# What a prompter does to a batch


@dataclass
class PromptTrace:
    """A prompter's output on a batch of images, as numpy arrays for plotting.

    ``images`` ``(B, 3, H, W)`` in [0, 1], ``labels`` ``(B,)``, ``prompt`` ``(B, 3, H, W)``;
    for a spiking prompter also ``gates`` ``(B, T, K)`` and ``on``/``off`` ``(B, T, 3, H, W)``.
    """

    images: np.ndarray
    labels: np.ndarray
    prompt: np.ndarray
    gates: np.ndarray | None = None
    on: np.ndarray | None = None
    off: np.ndarray | None = None

    @property
    def spiking(self) -> bool:
        return self.gates is not None

    @property
    def prompted(self) -> np.ndarray:
        """``x + prompt``: what the backbone is given (before its own normalisation)."""
        return self.images + self.prompt


@torch.no_grad()
def trace_prompter(prompter, images: torch.Tensor, labels: torch.Tensor) -> PromptTrace:
    """Run ``prompter`` on ``images`` ``(B, 3, H, W)`` in eval mode and keep what is drawn."""
    was_training = prompter.training
    prompter.eval()
    try:
        core = getattr(prompter, "spiking_core", None)
        if core is not None:
            gates, on, off = core(prompter.descriptor_sequence(images), images)
            prompt = prompter.prompt_from_spikes(on, off)
            spikes = {
                "gates": gates.transpose(0, 1).bool().cpu().numpy(),
                "on": on.transpose(0, 1).bool().cpu().numpy(),
                "off": off.transpose(0, 1).bool().cpu().numpy(),
            }
        else:
            prompt = prompter(images).prompt
            spikes = {}
    finally:
        prompter.train(was_training)
    if prompt is None:
        raise VisualizeError(
            f"prompter '{getattr(prompter, 'name', type(prompter).__name__)}' adds no prompt: "
            "there is nothing to draw"
        )
    return PromptTrace(
        images=images.detach().cpu().numpy(),
        labels=labels.detach().cpu().numpy(),
        prompt=prompt.detach().cpu().numpy(),
        **spikes,
    )


@torch.no_grad()
def sparsity_over(prompter, batches, total: int | None = None, progress: bool = False):
    """Per-image prompt sparsity and the number of distinct prompts over ``(images, labels)``
    batches: ``(sparsity (N,), distinct_prompts)``."""
    from lorsp_neuro.metrics import prompt_fingerprints

    was_training = prompter.training
    prompter.eval()
    sparsity, fingerprints = [], set()
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=total, desc="prompt sparsity", unit="batch", leave=False)
    try:
        for images, _ in batches:
            prompt = prompter(images).prompt
            if prompt is None:
                raise VisualizeError(
                    f"prompter '{prompter.name}' adds no prompt: there is no sparsity to measure"
                )
            sparsity.append(per_image_sparsity(prompt))
            fingerprints.update(prompt_fingerprints(prompt))
    finally:
        prompter.train(was_training)
    return np.concatenate(sparsity) if sparsity else np.zeros(0), len(fingerprints)


# --------------------------------------------------------------------------------------------
# Figures


def _figure(**kwargs):
    """A figure outside pyplot: no global backend switch (a notebook keeps its inline plots)
    and nothing to close; ``savefig`` renders it with Agg, so no display is needed."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` as a PNG atomically (rendered in memory, then temp file + rename)."""
    from lorsp_neuro.checkpoint import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _show_image(ax, chw: np.ndarray) -> None:
    ax.imshow(np.clip(np.transpose(chw, (1, 2, 0)), 0.0, 1.0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_gates(ax, gates: np.ndarray) -> None:
    """Raster of ``(T, K)`` gate spikes: a dark square per spike, one row per gate neuron."""
    steps, factors = gates.shape
    ax.imshow(gates.T, cmap="Greys", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(factors), [f"g{k}" for k in range(factors)], fontsize=8)
    ax.set_xticks(range(steps), [str(t) for t in range(steps)], fontsize=7)
    ax.set_xticks(np.arange(-0.5, steps, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, factors, 1), minor=True)
    ax.grid(which="minor", color="#bbbbbb", linewidth=0.6)
    ax.tick_params(which="minor", length=0)


def _draw_pixel_counts(ax, on: np.ndarray, off: np.ndarray, population: int, limit: float) -> None:
    """ON spikes per step as bars upwards, OFF downwards, as a fraction of the population."""
    steps = np.arange(on.shape[0])
    ax.bar(steps, spikes_per_step(on) / population, color=ON_COLOUR, width=0.8, label="ON")
    ax.bar(steps, -spikes_per_step(off) / population, color=OFF_COLOUR, width=0.8, label="OFF")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylim(-limit, limit)
    ax.set_xticks(steps, [str(t) for t in steps], fontsize=7)
    ax.tick_params(axis="y", labelsize=7)
    ax.yaxis.set_major_formatter(_abs_percent_formatter())


def _abs_percent_formatter():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _: f"{abs(value):.0%}")


def prompt_figure(
    trace: PromptTrace,
    path: str | Path,
    class_names: Sequence[str] = (),
    title: str = "",
) -> Path:
    """One row per image: image | prompt | prompted image [| gate raster | pixel spikes/step]."""
    from matplotlib.colors import TwoSlopeNorm

    rows = trace.images.shape[0]
    columns = 5 if trace.spiking else 3
    widths = [1, 1, 1, 1.5, 1.5][:columns]
    fig = _figure(figsize=(2.3 * sum(widths) + 0.8, 2.25 * rows + 0.6))
    axes = fig.subplots(
        rows,
        columns,
        squeeze=False,
        gridspec_kw={"width_ratios": widths, "wspace": 0.35, "hspace": 0.45},
    )
    if trace.spiking:
        maps = [on_off_balance(trace.on[i], trace.off[i]) for i in range(rows)]
        prompt_title = "neurons firing: ON red, OFF blue"
        colour_label = "ON − OFF firing rate"
    else:
        maps = [channel_mean(trace.prompt[i]) for i in range(rows)]
        prompt_title = "prompt (channel mean)"
        colour_label = "prompt value"
    # One symmetric colour scale for all rows, so rows can be compared.
    extent = max(float(np.abs(np.stack(maps)).max()), 1e-6)
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-extent, vmax=extent)
    population = int(np.prod(trace.on.shape[2:])) if trace.spiking else 0
    if trace.spiking:
        busiest = (
            max(float(spikes_per_step(trace.on[i]).max(initial=0)) for i in range(rows))
            / population
        )
        busiest = max(
            busiest,
            max(float(spikes_per_step(trace.off[i]).max(initial=0)) for i in range(rows))
            / population,
        )
        limit = max(busiest * 1.15, 0.01)
    image_artist = None
    for i in range(rows):
        label = int(trace.labels[i])
        name = class_names[label] if label < len(class_names) else str(label)
        _show_image(axes[i, 0], trace.images[i])
        axes[i, 0].set_ylabel(f"#{i}: {name}", fontsize=9)
        image_artist = axes[i, 1].imshow(maps[i], cmap="bwr", norm=norm, interpolation="nearest")
        axes[i, 1].set_xticks([])
        axes[i, 1].set_yticks([])
        zero = float((trace.prompt[i] == 0).mean())
        largest = float(np.abs(trace.prompt[i]).max())
        axes[i, 1].set_xlabel(f"{zero:.0%} of prompt = 0, max |p| {largest:.2g}", fontsize=8)
        _show_image(axes[i, 2], trace.prompted[i])
        if trace.spiking:
            _draw_gates(axes[i, 3], trace.gates[i])
            _draw_pixel_counts(axes[i, 4], trace.on[i], trace.off[i], population, limit)
    headings = ["image", prompt_title, "prompted image (clipped)"]
    if trace.spiking:
        headings += ["gate neurons (spike raster)", "pixel neurons: spikes per step"]
    for ax, heading in zip(axes[0], headings, strict=True):
        ax.set_title(heading, fontsize=9)
    if trace.spiking:
        axes[-1, 3].set_xlabel("time step", fontsize=8)
        axes[-1, 4].set_xlabel("time step  (ON up, OFF down; % of population)", fontsize=8)
    # Below the last prompt panel, so that no image column is squeezed to make room.
    colour_axes = axes[-1, 1].inset_axes([0.0, -0.42, 1.0, 0.07])
    colourbar = fig.colorbar(image_artist, cax=colour_axes, orientation="horizontal")
    colourbar.set_label(colour_label, fontsize=8)
    colourbar.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10, x=0.01, ha="left")
    return save_figure(fig, path)


def sparsity_histogram(
    sparsity: np.ndarray, path: str | Path, distinct_prompts: int | None = None, title: str = ""
) -> Path:
    """Histogram of per-image prompt sparsity, with its mean marked."""
    sparsity = np.asarray(sparsity, np.float64)
    fig = _figure(figsize=(6.2, 3.6))
    ax = fig.subplots()
    low, high = float(sparsity.min(initial=0.0)), float(sparsity.max(initial=1.0))
    span = max(high - low, 0.02)
    bins = np.linspace(max(0.0, low - 0.05 * span), min(1.0, high + 0.05 * span), 31)
    ax.hist(sparsity, bins=bins, color="#4c72b0", edgecolor="white")
    mean = float(sparsity.mean()) if sparsity.size else float("nan")
    ax.axvline(mean, color="black", linestyle="--", linewidth=1.2, label=f"mean {mean:.1%}")
    ax.set_xlabel("prompt sparsity of an image (fraction of prompt entries exactly 0)")
    ax.set_ylabel("test images")
    ax.xaxis.set_major_formatter(_abs_percent_formatter())
    extra = f", {distinct_prompts} distinct prompts" if distinct_prompts is not None else ""
    ax.set_title(title or f"Prompt sparsity over {sparsity.size} test images{extra}", fontsize=10)
    ax.legend(fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# A run directory → pictures


def visualize_run(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    images: int = 4,
    checkpoint: str = "best",
    test_size: int | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> dict[str, Any]:
    """Draw ``prompts.png`` (the first ``images`` test images) and ``sparsity.png`` (the test split)
    for a run directory; ``out_dir`` defaults to the run directory. Returns the paths and numbers."""
    from lorsp_neuro.data import iterate_batches
    from lorsp_neuro.training import _load_splits, load_run, model_image_size

    if isinstance(images, bool) or not isinstance(images, int) or not 1 <= images <= MAX_IMAGES:
        raise VisualizeError(f"images must be an integer from 1 to {MAX_IMAGES}, got {images!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise VisualizeError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir
    model, config = load_run(run_dir, checkpoint=checkpoint, device="cpu")
    if test_size is not None:
        config = config.replace(test_size=test_size)
    prompter = model.prompter.float()
    splits = _load_splits(config, model_image_size(model))
    test = splits.test
    if len(test) < images:
        raise VisualizeError(
            f"{run_dir}: the test split has {len(test)} images, {images} requested"
        )
    trace = trace_prompter(prompter, *test.batch(slice(0, images)))
    name = f"{config.prompter} on {config.backbone}/{config.dataset}"
    prompts_png = prompt_figure(
        trace,
        out / PROMPTS_FILE,
        splits.class_names,
        title=f"{name} ({run_dir.name}, {checkpoint} checkpoint): first {images} test images",
    )
    total = -(-len(test) // batch_size)
    sparsity, distinct = sparsity_over(
        prompter, iterate_batches(test, batch_size), total=total, progress=progress
    )
    sparsity_png = sparsity_histogram(
        sparsity,
        out / SPARSITY_FILE,
        distinct,
        title=f"{name}: prompt sparsity over {sparsity.size} test images, {distinct} distinct prompts",
    )
    result: dict[str, Any] = {
        "run_dir": str(run_dir),
        "checkpoint": checkpoint,
        "prompter": config.prompter,
        "images_drawn": images,
        "test_images": int(sparsity.size),
        "mean_prompt_sparsity": float(sparsity.mean()),
        "min_prompt_sparsity": float(sparsity.min()),
        "max_prompt_sparsity": float(sparsity.max()),
        "distinct_prompts": distinct,
        "files": {"prompts": str(prompts_png), "sparsity": str(sparsity_png)},
    }
    return result
