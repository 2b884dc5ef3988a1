"""Figures: energy per image (SNN vs ANN twin per profile) and a two-simulator spike raster.

matplotlib with the Agg backend (no display needed); every function writes one PNG atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from lorsp_neuro.io import write_figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def energy_bar_plot(reports: Sequence, path: str | os.PathLike, title: str = "") -> Path:
    """Grouped bars, one group per profile: SNN and ANN-twin energy per image (log scale, nJ).

    ``reports`` are :class:`hardware_sims.energy.EnergyReport` s (or their dicts).
    """
    plt = _pyplot()
    rows = [r if isinstance(r, Mapping) else r.to_dict() for r in reports]
    names = [r["profile"] for r in rows]
    snn = np.array([r["energy_per_image_pj"] for r in rows]) / 1e3
    ann = np.array([r["ann_twin_energy_pj"] for r in rows]) / 1e3
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(4.5, 1.8 * len(rows) + 2), 4.2))
    width = 0.38
    bars = [
        ax.bar(x - width / 2, snn, width, label="SNN (LIF, spikes)", color="#3b75af"),
        ax.bar(x + width / 2, ann, width, label="ANN twin (ReLU, MACs)", color="#ef8636"),
    ]
    for group in bars:
        for bar in group:
            ax.annotate(
                f"{bar.get_height():.3g}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax.set_yscale("log")
    ax.set_xticks(x, names)
    ax.set_ylabel("energy per image (nJ, log scale)")
    ax.set_title(title or "Energy per image by hardware profile")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.set_ylim(top=ax.get_ylim()[1] * 3)
    try:
        return write_figure(fig, path)
    finally:
        plt.close(fig)


def _chosen_neurons(a: np.ndarray, b: np.ndarray, limit: int) -> np.ndarray:
    """Neurons to draw: mismatched ones first, then the most active, at most ``limit``."""
    mismatch = np.flatnonzero((a != b).any(axis=0))
    activity = (a | b).sum(axis=0)
    active = [i for i in np.argsort(-activity, kind="stable") if activity[i] > 0]
    chosen = list(dict.fromkeys([*mismatch.tolist(), *active]))[:limit]
    return np.array(sorted(chosen), dtype=np.int64)


def spike_raster_plot(
    torch_records: Mapping[str, Mapping[str, np.ndarray]],
    lava_records: Mapping[str, Mapping[str, np.ndarray]],
    path: str | os.PathLike,
    image: int | None = None,
    neurons_per_layer: int = 24,
    labels: tuple[str, str] = ("torch", "Lava"),
    title: str = "",
) -> Path:
    """Spikes of both simulators for one image, overlaid: one panel per layer.

    Records are ``(images, steps, *shape)``; ``image=None`` picks the image with the most spikes.
    The first simulator is drawn as filled squares, the second as white crosses on top: a square
    with a cross is agreement, a lone mark is not. Per layer at most ``neurons_per_layer`` neurons
    are shown (mismatched ones first, then the most active); the y-axis gives their flat index.
    """
    plt = _pyplot()
    layers = [n for n in lava_records if n in torch_records]
    if image is None:
        counts = sum(
            np.asarray(records[n]["spikes"]).reshape(len(records[n]["spikes"]), -1).sum(axis=1)
            for records in (torch_records, lava_records)
            for n in layers
        )
        image = int(np.argmax(counts))
    fig, axes = plt.subplots(
        len(layers), 1, figsize=(7.5, 1.6 + 1.9 * len(layers)), squeeze=False, sharex=True
    )
    for ax, name in zip(axes[:, 0], layers, strict=True):
        a = np.asarray(torch_records[name]["spikes"][image], bool).reshape(
            torch_records[name]["spikes"].shape[1], -1
        )
        b = np.asarray(lava_records[name]["spikes"][image], bool).reshape(a.shape)
        chosen = _chosen_neurons(a, b, neurons_per_layer)
        size = float(np.clip(900.0 / max(chosen.size, 1), 6.0, 42.0))
        for data, style in (
            (a, dict(marker="s", s=size, color="#3b75af", label=labels[0])),
            (b, dict(marker="x", s=size / 2, color="white", linewidths=1.0, label=labels[1])),
        ):
            t, n = np.nonzero(data[:, chosen]) if chosen.size else (np.array([]), np.array([]))
            ax.scatter(t, n, **style)
        agree = 1.0 - np.count_nonzero(a != b) / a.size
        ax.set_title(
            f"{name}: {a.shape[1]} neurons, {int(a.sum())} / {int(b.sum())} spikes "
            f"({labels[0]} / {labels[1]}), agreement {agree:.6f}",
            fontsize=9,
        )
        ax.set_facecolor("#d9d9d9")
        ax.set_ylabel("neuron")
        if chosen.size:
            ticks = np.linspace(0, chosen.size - 1, min(chosen.size, 6)).astype(int)
            ax.set_yticks(ticks, [str(chosen[k]) for k in ticks], fontsize=7)
            ax.set_ylim(-0.8, chosen.size - 0.2)
        else:
            ax.set_yticks([])
            ax.text(0.5, 0.5, "no spikes", transform=ax.transAxes, ha="center", va="center")
        ax.set_xlim(-0.6, a.shape[0] - 0.4)
    axes[-1, 0].set_xlabel("time step")
    axes[-1, 0].xaxis.get_major_locator().set_params(integer=True)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper right", ncol=2, fontsize=8, facecolor="#d9d9d9")
    fig.suptitle(title or f"Spike raster, image {image}", fontsize=10, x=0.02, ha="left")
    fig.tight_layout()
    try:
        return write_figure(fig, path)
    finally:
        plt.close(fig)
