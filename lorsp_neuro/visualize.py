r"""Pictures of a trained prompter: what it adds to an image, how its neurons fire, how sparse it is.

:func:`visualize_run` reads a run directory written by ``lorsp train`` and draws, with matplotlib's
Agg renderer (no display needed, and pyplot's global backend is left alone):

- ``prompts.png``, one row per test image; the columns are the views of the prompter's layout
  (:data:`LAYOUTS`, chosen by :data:`TRACERS`):

  - ``lorsp`` (v2, value readout): the image; the **rate map** ρ (each pixel neuron's firing rate
    over the T steps, mean over the colour channels; with ``grid = G`` one cell per neuron of the
    ``G×G`` grid, outlined); the **pixel spikes at each step**; the **prompt** ``V ⊙ ρ``; the
    prompted image; the **gate raster**;
  - ``lorsp_v1``: the image; where the ON (red) and OFF (blue) pixel neurons fire
    (:func:`on_off_balance`); the prompted image; the gate raster; ON spikes per step upwards and
    OFF downwards. The sign a v1 population adds is ``alpha`` of its channel, which may be
    negative, so "ON" means "the positive-factor population", as DVS polarities do;
  - any other prompter (``lor_vp``, ``vp_pad`` …): the image, the signed prompt, the prompted image;

- ``values.png`` (``lorsp`` only): its values ``V = B A``, which do not depend on the image, per
  colour channel and as one colour picture (:func:`values_as_colour`);
- ``sparsity.png``: a histogram over the test split of each image's prompt sparsity (the fraction
  of its prompt entries that are exactly zero).

Signed maps are red positive, blue negative, white 0, on one colour scale shared by all rows.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lorsp_neuro.errors import LorspError
from lorsp_neuro.prompters import LoRSPPrompter, LoRSPv1Prompter

PROMPTS_FILE = "prompts.png"
VALUES_FILE = "values.png"
SPARSITY_FILE = "sparsity.png"
#: More rows than this make the picture unreadable; draw several pictures instead.
MAX_IMAGES = 32
ON_COLOUR, OFF_COLOUR = "#d62728", "#1f5fbf"
#: Layouts of ``prompts.png``: the v2 value readout, the v1 ON/OFF populations, a plain prompt.
VALUE_READOUT, ON_OFF, DENSE = "value_readout", "on_off", "dense"
#: Spike roles of a trace, as the exporter names its outputs: v2 pixels, v1 ON and OFF.
PIXELS, ON, OFF = "pixels", "on", "off"
CHANNEL_NAMES = ("R", "G", "B")


class VisualizeError(LorspError, ValueError):
    """A picture cannot be drawn: bad image count, a prompter without a prompt, too few images."""


# --------------------------------------------------------------------------------------------
# Pure functions


def on_off_balance(on: np.ndarray, off: np.ndarray) -> np.ndarray:
    r"""Per pixel, how much more the ON population fired than the OFF one, in [-1, 1] (v1).

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


def rate_map(spikes: np.ndarray) -> np.ndarray:
    r"""``(T, C, h, w) → (h, w)``: the firing rate averaged over steps and channels,
    :math:`\bar\rho(h, w) = \frac{1}{T C} \sum_{t, c} s(t, c, h, w) \in [0, 1]`."""
    return np.asarray(spikes, np.float64).mean(axis=(0, 1))


def spike_strip(spikes: np.ndarray) -> np.ndarray:
    r"""``(T, C, h, w) → (h, T·(w + 1) − 1)``: step t's spike count over the channels,
    :math:`n_t(h, w) = \sum_c s(t, c, h, w)`, side by side, one NaN column between steps."""
    counts = np.asarray(spikes, np.float64).sum(axis=1)
    steps, height, _ = counts.shape
    gap = np.full((height, 1), np.nan)
    return np.concatenate([part for t in range(steps) for part in (gap, counts[t])][1:], axis=1)


def values_as_colour(values: np.ndarray) -> np.ndarray:
    r"""``(3, H, W) → (3, H, W)`` in [0, 1]: :math:`0.5 + V / (2 \max|V|)`, grey where V = 0
    (all grey for an all-zero V)."""
    values = np.asarray(values, np.float64)
    extent = float(np.abs(values).max(initial=0.0))
    return 0.5 + values / (2 * extent) if extent > 0 else np.full_like(values, 0.5)


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
    ``layout`` picks the views (:data:`LAYOUTS`). A spiking prompter adds ``gates``
    ``(B, T, K)`` and ``spikes`` by role, ``(B, T, 3, h, w)`` each: ``pixels`` (v2; ``h = w = G``
    with a grid) or ``on`` and ``off`` (v1). v2 also gives its ``values`` V ``(3, H, W)`` and
    ``grid`` (None: one neuron per pixel).
    """

    images: np.ndarray
    labels: np.ndarray
    prompt: np.ndarray
    layout: str = DENSE
    gates: np.ndarray | None = None
    spikes: dict[str, np.ndarray] = field(default_factory=dict)
    values: np.ndarray | None = None
    grid: int | None = None

    @property
    def spiking(self) -> bool:
        return self.gates is not None

    @property
    def prompted(self) -> np.ndarray:
        """``x + prompt``: what the backbone is given (before its own normalisation)."""
        return self.images + self.prompt


def _trace_value_readout(prompter, images: torch.Tensor) -> dict[str, Any]:
    """v2: one run of the spiking core gives the spikes; the prompt is read out from them."""
    record = prompter.run_core(images)
    core = prompter.spiking_core
    return {
        "layout": VALUE_READOUT,
        "prompt": prompter.prompt_from_spikes(record.pixels),
        "gates": record.gates,
        "spikes": {PIXELS: record.pixels},
        "values": core.values(),
        "grid": core.grid,
    }


def _trace_on_off(prompter, images: torch.Tensor) -> dict[str, Any]:
    """v1: the descriptor at every step; ON and OFF spikes; ``alpha ⊙ (on − off)``."""
    gates, on, off = prompter.spiking_core(prompter.descriptor_sequence(images), images)
    return {
        "layout": ON_OFF,
        "prompt": prompter.prompt_from_spikes(on, off),
        "gates": gates,
        "spikes": {ON: on, OFF: off},
    }


def _trace_dense(prompter, images: torch.Tensor) -> dict[str, Any]:
    return {"layout": DENSE, "prompt": prompter(images).prompt}


def _tracer(prompter) -> Callable[[Any, torch.Tensor], dict[str, Any]]:
    """The tracer of :data:`TRACERS` for the prompter's class (its nearest ancestor's), or the
    plain one for a prompter without spikes."""
    for cls in type(prompter).__mro__:
        if cls in TRACERS:
            return TRACERS[cls]
    return _trace_dense


def _numpy(value: torch.Tensor, dtype=None) -> np.ndarray:
    array = value.detach().cpu().numpy()
    return array.astype(dtype) if dtype is not None else array


@torch.no_grad()
def trace_prompter(prompter, images: torch.Tensor, labels: torch.Tensor) -> PromptTrace:
    """Run ``prompter`` on ``images`` ``(B, 3, H, W)`` in eval mode and keep what is drawn."""
    was_training = prompter.training
    prompter.eval()
    try:
        traced = _tracer(prompter)(prompter, images)
    finally:
        prompter.train(was_training)
    if traced["prompt"] is None:
        raise VisualizeError(
            f"prompter '{getattr(prompter, 'name', type(prompter).__name__)}' adds no prompt: "
            "there is nothing to draw"
        )
    gates = traced.get("gates")
    values = traced.get("values")
    return PromptTrace(
        images=_numpy(images),
        labels=_numpy(labels),
        prompt=_numpy(traced["prompt"]),
        layout=traced["layout"],
        gates=None if gates is None else _numpy(gates.transpose(0, 1), bool),
        spikes={
            role: _numpy(s.transpose(0, 1), bool) for role, s in traced.get("spikes", {}).items()
        },
        values=None if values is None else _numpy(values, np.float64),
        grid=traced.get("grid"),
    )


#: Prompter class → how its spikes and prompt are traced (a subclass uses its nearest ancestor's).
TRACERS: dict[type, Callable[[Any, torch.Tensor], dict[str, Any]]] = {
    LoRSPPrompter: _trace_value_readout,
    LoRSPv1Prompter: _trace_on_off,
}


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

        batches = tqdm(
            batches, total=total, desc="prompt sparsity", unit="batch", leave=False, disable=None
        )
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
    from lorsp_neuro.io import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _show_image(ax, chw: np.ndarray) -> None:
    ax.imshow(np.clip(np.transpose(chw, (1, 2, 0)), 0.0, 1.0), interpolation="nearest")
    _bare(ax)


def _colourbar(fig, ax, artist, label: str) -> None:
    """A horizontal colour bar below ``ax``, so that no image column is squeezed to make room."""
    colour_axes = ax.inset_axes([0.0, -0.42, 1.0, 0.07])
    colourbar = fig.colorbar(artist, cax=colour_axes, orientation="horizontal")
    colourbar.set_label(label, fontsize=8)
    colourbar.ax.tick_params(labelsize=7)


def _abs_percent_formatter():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _: f"{abs(value):.0%}")


def _outline_cells(ax, cells: int) -> None:
    """Thin lines between the ``cells × cells`` neurons of a grid."""
    edges = np.arange(-0.5, cells, 1)
    ax.set_xticks(edges, minor=True)
    ax.set_yticks(edges, minor=True)
    ax.grid(which="minor", color="#888888", linewidth=0.4)
    ax.tick_params(which="minor", length=0)


# One function per view of prompts.png: ``draw(ax, trace, i, scale)`` fills row i's panel and
# returns its artist (for the colour bar); ``scale(trace)`` is computed once per figure, so that
# every row shares it.


def _symmetric_scale(picture: Callable[[PromptTrace, int], np.ndarray]):
    def scale(trace: PromptTrace):
        from matplotlib.colors import TwoSlopeNorm

        rows = trace.images.shape[0]
        extent = max(max(float(np.abs(picture(trace, i)).max()) for i in range(rows)), 1e-6)
        return TwoSlopeNorm(vcenter=0.0, vmin=-extent, vmax=extent)

    return scale


def _unit_scale(trace: PromptTrace):
    from matplotlib.colors import Normalize

    return Normalize(vmin=0.0, vmax=1.0)


def _no_scale(trace: PromptTrace) -> None:
    return None


def _draw_image(ax, trace: PromptTrace, i: int, scale, attribute: str) -> None:
    _show_image(ax, getattr(trace, attribute)[i])


def _draw_map(
    ax,
    trace: PromptTrace,
    i: int,
    norm,
    picture: Callable[[PromptTrace, int], np.ndarray],
    caption: Callable[[PromptTrace, int], str],
    cmap: str,
    cells: bool = False,
):
    """A 2-D ``picture`` of row i on the figure's shared ``norm``, captioned; with ``cells`` and
    a grid, its neurons outlined."""
    artist = ax.imshow(picture(trace, i), cmap=cmap, norm=norm, interpolation="nearest")
    _bare(ax)
    if cells and trace.grid is not None:
        _outline_cells(ax, trace.grid)
    ax.set_xlabel(caption(trace, i), fontsize=8)
    return artist


def _prompt_picture(trace: PromptTrace, i: int) -> np.ndarray:
    return channel_mean(trace.prompt[i])


def _balance_picture(trace: PromptTrace, i: int) -> np.ndarray:
    return on_off_balance(trace.spikes[ON][i], trace.spikes[OFF][i])


def _rate_picture(trace: PromptTrace, i: int) -> np.ndarray:
    return rate_map(trace.spikes[PIXELS][i])


def _prompt_caption(trace: PromptTrace, i: int) -> str:
    zero = float((trace.prompt[i] == 0).mean())
    largest = float(np.abs(trace.prompt[i]).max())
    return f"{zero:.0%} of prompt = 0, max |p| {largest:.2g}"


def _rate_caption(trace: PromptTrace, i: int) -> str:
    spikes = trace.spikes[PIXELS][i]
    silent = float((spikes.sum(axis=0) == 0).mean())
    return f"mean rate {float(spikes.mean()):.0%}, {silent:.0%} of neurons silent"


def _draw_spike_strip(ax, trace: PromptTrace, i: int, scale, role: str) -> None:
    """Each step's spikes of population ``role`` as a map (count over the 3 channels)."""
    import matplotlib

    spikes = trace.spikes[role][i]
    steps, channels, _, width = spikes.shape
    strip = np.ma.masked_invalid(spike_strip(spikes))
    cmap = matplotlib.colormaps["Greys"].with_extremes(bad="white")
    ax.imshow(strip, cmap=cmap, vmin=0, vmax=channels, aspect="equal", interpolation="nearest")
    centres = [t * (width + 1) + (width - 1) / 2 for t in range(steps)]
    ax.set_xticks(centres, [str(t) for t in range(steps)], fontsize=7)
    ax.set_yticks([])


def _draw_gates(ax, trace: PromptTrace, i: int, scale) -> None:
    """Raster of ``(T, K)`` gate spikes: a dark square per spike, one row per gate neuron."""
    gates = trace.gates[i]
    steps, count = gates.shape
    ax.imshow(gates.T, cmap="Greys", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(count), [f"g{k}" for k in range(count)], fontsize=8)
    ax.set_xticks(range(steps), [str(t) for t in range(steps)], fontsize=7)
    ax.set_xticks(np.arange(-0.5, steps, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, count, 1), minor=True)
    ax.grid(which="minor", color="#bbbbbb", linewidth=0.6)
    ax.tick_params(which="minor", length=0)


def _population_fraction(trace: PromptTrace, i: int, role: str) -> np.ndarray:
    spikes = trace.spikes[role][i]
    return spikes_per_step(spikes) / spikes[0].size


def _bar_scale(populations: Sequence[tuple[str, str, int]]):
    def scale(trace: PromptTrace) -> float:
        rows = trace.images.shape[0]
        busiest = max(
            float(_population_fraction(trace, i, role).max(initial=0))
            for i in range(rows)
            for role, _, _ in populations
        )
        return max(busiest * 1.15, 0.01)

    return scale


def _draw_pixel_counts(
    ax, trace: PromptTrace, i: int, limit: float, populations: Sequence[tuple[str, str, int]]
) -> None:
    """Spikes per step of each ``(role, colour, direction)`` population as bars, as a fraction
    of the population (direction −1 draws downwards)."""
    steps = np.arange(trace.gates.shape[1])
    for role, colour, direction in populations:
        fraction = _population_fraction(trace, i, role)
        ax.bar(steps, direction * fraction, color=colour, width=0.8, label=role)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylim(-limit if any(d < 0 for *_, d in populations) else 0, limit)
    ax.set_xticks(steps, [str(t) for t in steps], fontsize=7)
    ax.tick_params(axis="y", labelsize=7)
    ax.yaxis.set_major_formatter(_abs_percent_formatter())


@dataclass(frozen=True)
class View:
    """One column of ``prompts.png``: its heading, ``draw(ax, trace, i, scale)`` and ``scale``
    (module comment above), its width, an x label under the last row (``footer``) and the label
    of a colour bar under the last row (none if empty)."""

    heading: str
    draw: Callable[..., Any]
    scale: Callable[[PromptTrace], Any] = _no_scale
    width: float = 1.0
    footer: str = ""
    colourbar: str = ""


IMAGE_VIEW = View("image", partial(_draw_image, attribute="images"))
PROMPTED_VIEW = View("prompted image (clipped)", partial(_draw_image, attribute="prompted"))
GATES_VIEW = View("gate neurons (spike raster)", _draw_gates, width=1.3, footer="time step")
PROMPT_VIEW = View(
    "prompt (channel mean)",
    partial(_draw_map, picture=_prompt_picture, caption=_prompt_caption, cmap="bwr"),
    _symmetric_scale(_prompt_picture),
    colourbar="prompt value",
)
RATE_VIEW = View(
    "rate map ρ (channel mean)",
    partial(_draw_map, picture=_rate_picture, caption=_rate_caption, cmap="magma", cells=True),
    _unit_scale,
    colourbar="pixel neurons' firing rate over T",
)
PIXEL_STEPS_VIEW = View(
    "pixel neurons: spikes at each step",
    partial(_draw_spike_strip, role=PIXELS),
    width=2.0,
    footer="time step  (darker: more of the 3 channels fire)",
)
ON_OFF_POPULATIONS = ((ON, ON_COLOUR, 1), (OFF, OFF_COLOUR, -1))
BALANCE_VIEW = View(
    "neurons firing: ON red, OFF blue",
    partial(_draw_map, picture=_balance_picture, caption=_prompt_caption, cmap="bwr"),
    _symmetric_scale(_balance_picture),
    colourbar="ON − OFF firing rate",
)
ON_OFF_STEPS_VIEW = View(
    "pixel neurons: spikes per step",
    partial(_draw_pixel_counts, populations=ON_OFF_POPULATIONS),
    _bar_scale(ON_OFF_POPULATIONS),
    width=1.5,
    footer="time step  (ON up, OFF down; % of population)",
)
#: Layout → the columns of ``prompts.png``.
LAYOUTS: dict[str, tuple[View, ...]] = {
    VALUE_READOUT: (
        IMAGE_VIEW,
        RATE_VIEW,
        PIXEL_STEPS_VIEW,
        PROMPT_VIEW,
        PROMPTED_VIEW,
        GATES_VIEW,
    ),
    ON_OFF: (IMAGE_VIEW, BALANCE_VIEW, PROMPTED_VIEW, GATES_VIEW, ON_OFF_STEPS_VIEW),
    DENSE: (IMAGE_VIEW, PROMPT_VIEW, PROMPTED_VIEW),
}


def prompt_figure(
    trace: PromptTrace,
    path: str | Path,
    class_names: Sequence[str] = (),
    title: str = "",
) -> Path:
    """One row per image, one column per view of the trace's layout (:data:`LAYOUTS`)."""
    views = LAYOUTS[trace.layout]
    rows = trace.images.shape[0]
    widths = [view.width for view in views]
    fig = _figure(figsize=(2.3 * sum(widths) + 0.8, 2.25 * rows + 0.6))
    axes = fig.subplots(
        rows,
        len(views),
        squeeze=False,
        gridspec_kw={"width_ratios": widths, "wspace": 0.35, "hspace": 0.45},
    )
    for column, view in enumerate(views):
        scale = view.scale(trace)
        for i in range(rows):
            artist = view.draw(axes[i, column], trace, i, scale)
        axes[0, column].set_title(view.heading, fontsize=9)
        if view.footer:
            axes[-1, column].set_xlabel(view.footer, fontsize=8)
        if view.colourbar:
            _colourbar(fig, axes[-1, column], artist, view.colourbar)
    for i in range(rows):
        label = int(trace.labels[i])
        name = class_names[label] if label < len(class_names) else str(label)
        axes[i, 0].set_ylabel(f"#{i}: {name}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10, x=0.01, ha="left")
    return save_figure(fig, path)


def values_figure(values: np.ndarray, path: str | Path, title: str = "") -> Path:
    """The values ``V`` ``(3, H, W)``: one panel per channel on one symmetric colour scale, and
    V as one colour picture (:func:`values_as_colour`)."""
    from matplotlib.colors import TwoSlopeNorm

    values = np.asarray(values, np.float64)
    extent = max(float(np.abs(values).max()), 1e-6)
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-extent, vmax=extent)
    fig = _figure(figsize=(2.3 * (len(values) + 1) + 0.8, 3.2))
    axes = fig.subplots(1, len(values) + 1, squeeze=False)[0]
    for channel, ax in enumerate(axes[:-1]):
        artist = ax.imshow(values[channel], cmap="bwr", norm=norm, interpolation="nearest")
        _bare(ax)
        ax.set_title(f"V, channel {CHANNEL_NAMES[channel]}", fontsize=9)
        ax.set_xlabel(f"max |V| {float(np.abs(values[channel]).max()):.2g}", fontsize=8)
    _colourbar(fig, axes[0], artist, "value")
    _show_image(axes[-1], values_as_colour(values))
    axes[-1].set_title("V as colour (grey: 0)", fontsize=9)
    axes[-1].set_xlabel("0.5 + V / (2 max |V|) as RGB", fontsize=8)
    fig.suptitle(
        title or "The values V = B A (the same for every image): prompt = V ⊙ ρ",
        fontsize=10,
        x=0.01,
        ha="left",
    )
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
    """Draw ``prompts.png`` (the first ``images`` test images), ``values.png`` (``lorsp`` only) and
    ``sparsity.png`` (the test split) for a run directory; ``out_dir`` defaults to the run
    directory. Returns the paths and numbers."""
    from lorsp_neuro.data import iterate_batches
    from lorsp_neuro.model import model_image_size
    from lorsp_neuro.runs import load_run, load_splits

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
    splits = load_splits(config, model_image_size(model))
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
    files = {"prompts": str(prompts_png)}
    if trace.values is not None:
        values_png = values_figure(
            trace.values,
            out / VALUES_FILE,
            title=f"{name} ({run_dir.name}, {checkpoint} checkpoint): the values V = B A, "
            "the same for every image; prompt = V ⊙ ρ",
        )
        files["values"] = str(values_png)
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
        "layout": trace.layout,
        "files": {**files, "sparsity": str(sparsity_png)},
    }
    return result
