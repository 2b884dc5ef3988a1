"""Export a training run's spiking prompter to a NIR file, checked: the pipeline every front end uses.

:func:`export_run` ``(run_dir, output) -> ExportResult`` loads the run's checkpoint
(:func:`lorsp_neuro.runs.load_run`), exports the prompter's spiking part
(:func:`exporters.lorsp_export.export_lorsp`), writes it (:func:`exporters.validate.write_nir`),
reads it back through the validating reader, summarizes it and, when asked, verifies that the
spike trains and the prompt rebuilt from the file alone equal the prompter's on some images: the
run's first test images (``verify_on="test"``) or seeded uniform random ones (``"random"``).
``lorsp export``, ``lorsp demo``, the notebooks and the benchmarks call it and only format it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lorsp_neuro.errors import LorspError

VERIFY_ON = ("random", "test")


@dataclass
class ExportResult:
    """What :func:`export_run` wrote and what the file holds.

    ``totals`` are :func:`exporters.summary.summarize_graph`'s counts (nodes, edges, spiking
    neurons, parameters); ``nodes`` the ``(name, type)`` pairs in evaluation order; ``inputs`` /
    ``outputs`` the file's ``{role: node name}``; ``verify`` the
    :func:`~exporters.lorsp_export.verify_lorsp_export` report, or ``None`` when not asked.
    """

    run_dir: str
    checkpoint: str
    path: str
    bytes: int
    format: str
    dt: float
    steps: int
    presentation: str
    cell: str
    grid: int | None
    totals: dict[str, int]
    nodes: list[tuple[str, str]]
    inputs: dict[str, str]
    outputs: dict[str, str]
    verify: dict[str, Any] | None = None
    target: str = "nir"

    @property
    def matches(self) -> bool | None:
        """Whether the verification found the file equal to the prompter (``None``: not run)."""
        return None if self.verify is None else bool(self.verify["matches"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def host_cell(summary: dict) -> str:
    """The Norse cell recorded in an exact or a portable file's host metadata."""
    metadata = summary["metadata"]
    host = metadata.get("lorsp") or metadata["lorsp_portable"]["lorsp"]
    return host["cell"]


def export_run(
    run_dir: str | Path,
    output: str | Path,
    *,
    checkpoint: str = "best",
    verify: int = 0,
    verify_on: str = "random",
    seed: int = 0,
    target: str = "nir",
) -> ExportResult:
    """Export the spiking prompter of ``run_dir`` to ``output`` and check it (module doc).

    ``verify`` images (0: no check) drawn as ``verify_on`` says; ``seed`` seeds random images.
    ``target`` other than ``nir`` writes the portable graph for that tool
    (:func:`exporters.portable.export_portable`), verified with the importer the same way.
    """
    import torch

    from exporters.lorsp_export import lorsp_host, verify_lorsp_export
    from exporters.portable import export_portable, portable_host, verify_portable
    from exporters.summary import summarize_graph
    from exporters.validate import load_nir, write_nir
    from lorsp_neuro.runs import load_run, load_test_images

    if verify_on not in VERIFY_ON:
        raise LorspError(f"verify_on must be one of {VERIFY_ON}, got {verify_on!r}")
    model, config = load_run(run_dir, checkpoint=checkpoint, device="cpu")
    prompter = model.prompter
    path = write_nir(export_portable(prompter, target), output)
    graph = load_nir(path)
    summary = summarize_graph(graph)
    portable = None if target == "nir" else portable_host(graph)
    host = lorsp_host(graph) if portable is None else portable.lorsp
    result = ExportResult(
        run_dir=str(run_dir),
        checkpoint=checkpoint,
        path=str(path),
        bytes=path.stat().st_size,
        format=host.format,
        dt=summary["metadata"]["dt"],
        steps=host.steps,
        presentation=host.presentation,
        cell=host_cell(summary),
        grid=getattr(host, "grid", None),
        totals=summary["totals"],
        nodes=[(node["name"], node["type"]) for node in summary["nodes"]],
        inputs=dict(host.inputs) if portable is None else {"packed": portable.input},
        outputs=dict(host.outputs) if portable is None else {"packed": portable.output},
        target=target,
    )
    if verify:
        if verify_on == "test":
            images, _ = load_test_images(config, model, verify)
        else:
            generator = torch.Generator().manual_seed(seed)
            images = torch.rand(verify, 3, *prompter.image_size, generator=generator)
        verify_file = verify_lorsp_export if portable is None else verify_portable
        result.verify = verify_file(prompter, path, images.to(torch.float64))
    return result
