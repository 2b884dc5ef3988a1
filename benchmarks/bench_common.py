"""What the benchmark scripts share: result files, statistics, memory probes and the tables.

Every benchmark writes one JSON report to ``benchmarks/results/`` and prints its tables with the
renderers below; ``update_readme.py`` renders the README from the same JSON with the same
functions, so the printed tables, the JSON and the README cannot drift apart.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import math
import os
import platform
import resource
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lorsp_neuro.errors import LorspError
from lorsp_neuro.io import write_json

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
RUNS_DIR = REPO / "benchmarks" / "runs"
SCHEMA_VERSION = 1

#: The prompters a table may hold, in table order (no prompt first, LoRSP v2, then v1, the
#: design v2 replaced).
PROMPTERS = (
    "linear_probe",
    "vp_pad",
    "full_dense",
    "lor_vp",
    "lor_vp_pruned",
    "lorsp_ann",
    "lorsp",
    "lorsp_v1",
)
#: What ``make bench`` trains: all but v1, whose table (same settings) is reproduced with
#: ``accuracy_table.py --prompters lorsp_v1`` and cited in the README; it keeps make bench
#: within its hour on 2 cores.
TABLE_PROMPTERS = ("linear_probe", "vp_pad", "full_dense", "lor_vp", "lorsp_ann", "lorsp")
#: Separates a table row's prompter from its options: ``lorsp@grid=8,rank=2``.
VARIANT_SEPARATOR = "@"


class BenchmarkError(LorspError):
    """A benchmark cannot run or its report is malformed; the message names file and field."""


def split_variant(label: str) -> tuple[str, dict[str, Any]]:
    """A table row's label → ``(prompter, options)``: ``"lorsp@grid=8"`` → ``("lorsp",
    {"grid": 8})``; values are read as YAML (``8``, ``0.9``, ``true``). A label without ``@`` is
    the prompter at its registry defaults. Unknown prompters are a :class:`BenchmarkError`."""
    import yaml

    prompter, _, spec = label.partition(VARIANT_SEPARATOR)
    if prompter not in PROMPTERS:
        raise BenchmarkError(
            f"table row {label!r}: unknown prompter {prompter!r}; known: {PROMPTERS}"
        )
    options: dict[str, Any] = {}
    for item in filter(None, spec.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BenchmarkError(f"table row {label!r}: expected key=value after '@', got {item!r}")
        options[key.strip()] = yaml.safe_load(value)
    return prompter, options


# --------------------------------------------------------------------------------------------
# Paired statistics


def t_interval(differences: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t interval of paired differences (``nan`` width for n < 2)."""
    import statistics

    from scipy import stats

    n = len(differences)
    mean = statistics.fmean(differences)
    if n < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * statistics.stdev(differences) / math.sqrt(n)
    return mean, mean - half, mean + half


def verdict(low: float | None, high: float | None) -> str:
    """What a paired interval says: 'better' / 'worse' only when it excludes zero."""
    if low is None or high is None or math.isnan(low):
        return "too few seeds"
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "no detectable difference"


def paired_difference(
    method: dict[int, float], baseline: dict[int, float]
) -> dict[str, Any] | None:
    """``method − baseline`` seed by seed over the seeds both have (same split, same data order):
    the differences, their mean and 95 % t-interval, the seeds won and the verdict."""
    shared = sorted(set(method) & set(baseline))
    if not shared:
        return None
    differences = [method[s] - baseline[s] for s in shared]
    mean, low, high = t_interval(differences)
    return {
        "seeds": shared,
        "differences": differences,
        "mean": mean,
        "ci95": [low, high],
        "wins": sum(d > 0 for d in differences),
        "verdict": verdict(low, high),
    }


def paired_text(paired: dict[str, Any]) -> str:
    """``+1.2 points (95 % CI −0.3 … +2.7; 4/5 seeds won): no detectable difference``."""
    low, high = paired["ci95"]

    def signed(value: float | None) -> str:
        return "–" if value is None or math.isnan(value) else f"{100 * value:+.1f}"

    return (
        f"{signed(paired['mean'])} points (95 % CI {signed(low)} … {signed(high)}; "
        f"{paired['wins']}/{len(paired['differences'])} seeds won): **{paired['verdict']}**"
    )


# --------------------------------------------------------------------------------------------
# Reports


def machine_info() -> dict[str, Any]:
    """Where a report was measured (the numbers mean little without it)."""
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["cuda_device"] = torch.cuda.get_device_name(0)
    except ImportError:  # the report still says where it ran
        info["torch"] = None
    return info


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def write_report(path: Path, report: dict[str, Any]) -> Path:
    """Write ``report`` atomically (temp file + rename): a stopped run never leaves half a file.

    Non-finite numbers are written as ``null`` (standard JSON), so the renderers take ``None``
    wherever a value can be undefined (say the interval of a single seed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, report)
    return path


def benchmark_command(module: str, *arguments: str) -> list[str]:
    """The command line running ``benchmarks.<module>`` in a fresh interpreter; run it with the
    repository root as working directory, where ``python -m`` finds the package."""
    return [sys.executable, "-m", f"benchmarks.{module}", *arguments]


#: Fields every report of a kind must have, checked before a table is rendered from it.
REQUIRED_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "accuracy": {
        "": ("benchmark", "schema_version", "settings", "datasets", "runs", "rows", "wall_seconds"),
        "rows": (
            "dataset",
            "prompter",
            "seeds",
            "test_accuracy_mean",
            "test_accuracy_std",
            "tunable_params",
            "prompt_params",
            "head_params",
            "prompt_sparsity_mean",
            "synops_per_image",
            "energy_per_image_pj",
            "ann_twin_energy_per_image_pj",
            "snn_over_ann_energy",
        ),
    },
    "speed": {
        "": ("benchmark", "schema_version", "settings", "step_time", "simulation", "wall_seconds"),
        "step_time": ("image_size", "batch_size", "methods", "ratios"),
        "simulation": ("image_size", "neurons", "norse", "lava", "lava_over_norse"),
    },
    "gpu": {
        "": ("benchmark", "schema_version", "settings", "step_time", "wall_seconds"),
        "step_time": ("image_size", "batch_size", "methods", "ratios"),
    },
    "energy": {
        "": ("benchmark", "schema_version", "settings", "rows", "wall_seconds"),
        "rows": ("grid", "steps", "test_accuracy", "synops_per_image", "energy_per_image_pj"),
    },
    "frontier": {
        "": ("benchmark", "schema_version", "settings", "runs", "points", "wall_seconds"),
        "points": ("target_sparsity", "method", "baseline", "method_result", "baseline_result"),
    },
}


def check_report(report: Any, kind: str, source: str | Path) -> dict[str, Any]:
    """Raise :class:`BenchmarkError` naming ``source`` and the field when ``report`` is not a
    complete ``kind`` report; return it unchanged otherwise."""
    if not isinstance(report, dict):
        raise BenchmarkError(f"{source}: expected a JSON object, got {type(report).__name__}")
    if report.get("benchmark") != kind:
        raise BenchmarkError(
            f"{source}: field 'benchmark' is {report.get('benchmark')!r}, expected {kind!r}"
        )
    if report.get("schema_version") != SCHEMA_VERSION:
        raise BenchmarkError(
            f"{source}: schema_version {report.get('schema_version')!r}, this code reads "
            f"{SCHEMA_VERSION}; re-run the benchmark"
        )
    for part, names in REQUIRED_FIELDS[kind].items():
        entries = [report] if part == "" else report.get(part)
        if not isinstance(entries, list) or (part and not entries):
            raise BenchmarkError(f"{source}: field '{part}' must be a non-empty list")
        for index, entry in enumerate(entries):
            where = part if part == "" else f"{part}[{index}]"
            missing = [n for n in names if n not in entry]
            if missing:
                raise BenchmarkError(f"{source}: {where or 'report'} lacks {', '.join(missing)}")
    return report


# --------------------------------------------------------------------------------------------
# Statistics


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    r"""Mean and sample standard deviation of the non-missing ``values``.

    .. math:: \bar x = \frac1n \sum_i x_i, \qquad s = \sqrt{\frac{1}{n-1}\sum_i (x_i - \bar x)^2}

    ``(None, None)`` without values; ``s`` is ``None`` for a single value (no spread measured).
    """
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None, None
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, None
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def median(values: Sequence[float]) -> float:
    """The middle value (mean of the two middle ones for an even count)."""
    if not values:
        raise BenchmarkError("median of no measurements")
    xs = sorted(values)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else 0.5 * (xs[mid - 1] + xs[mid])


def loglog_slope(sizes: Sequence[float], costs: Sequence[float]) -> float | None:
    r"""Least-squares slope ``b`` of ``log c = a + b·log n``: cost grows as ``n^b``.

    .. math:: b = \frac{\sum_i (u_i - \bar u)(w_i - \bar w)}{\sum_i (u_i - \bar u)^2},
        \quad u_i = \log n_i,\ w_i = \log c_i

    ``None`` with fewer than two distinct positive points.
    """
    points = [
        (math.log(n), math.log(c)) for n, c in zip(sizes, costs, strict=True) if n > 0 and c > 0
    ]
    if len({u for u, _ in points}) < 2:
        return None
    mu = sum(u for u, _ in points) / len(points)
    mw = sum(w for _, w in points) / len(points)
    num = sum((u - mu) * (w - mw) for u, w in points)
    den = sum((u - mu) ** 2 for u, _ in points)
    return num / den


# --------------------------------------------------------------------------------------------
# Memory


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size, MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS).

    ``RUSAGE_CHILDREN``: the largest terminated, waited-for descendant (e.g. the Lava worker).
    """
    peak = resource.getrusage(who).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def _status_mib(field_name: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        return None
    return None


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class RssPeakProbe:
    """Peak RSS of this process over a stretch of work (Linux: ``VmHWM``, reset through
    ``/proc/self/clear_refs``, so several stretches in one process each get their own peak).

    ``start()`` returns the RSS at the start; ``stop()`` the peak since ``start()`` (MiB). Where
    the peak cannot be reset, ``stop()`` returns the process's lifetime peak and ``resettable``
    is False.
    """

    def __init__(self):
        self.resettable = self._reset()

    @staticmethod
    def _reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
        except OSError:
            return False
        return _status_mib("VmHWM") is not None

    def start(self) -> float:
        if self.resettable:
            # Give freed heap pages back first: otherwise a step that reuses memory freed by
            # the previous one shows no increase at all.
            _malloc_trim()
            self._reset()
            return _status_mib("VmRSS") or 0.0
        return peak_rss_mib()

    def stop(self) -> float:
        return (_status_mib("VmHWM") if self.resettable else None) or peak_rss_mib()


# --------------------------------------------------------------------------------------------
# Tables (markdown)


def _num(value: float | None, digits: int = 0, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value * scale:,.{digits}f}"


def _pm(mean: float | None, std: float | None, digits: int, scale: float = 1.0) -> str:
    if mean is None:
        return "–"
    if std is None:
        return _num(mean, digits, scale)
    return f"{_num(mean, digits, scale)} ± {_num(std, digits, scale)}"


def _si(value: float | None, unit: str) -> str:
    """``2.47 M SynOps``, ``234 µJ``-style short numbers."""
    if value is None:
        return "–"
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _energy(pj: float | None) -> str:
    if pj is None:
        return "–"
    for factor, unit in ((1e6, "µJ"), (1e3, "nJ")):
        if pj >= factor:
            return f"{pj / factor:.3g} {unit}"
    return f"{pj:.3g} pJ"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def budget_line(dataset: str, budget: dict[str, Any]) -> str:
    return (
        f"**`{dataset}`**: {budget['train_size']:,} train / {budget['val_size']:,} val / "
        f"{budget['test_size']:,} test images at {budget['image_size']} px, {budget['epochs']} "
        f"epochs × {budget['steps_per_epoch']} steps of {budget['batch_size']} images "
        f"({budget['steps']:,} steps)"
    )


ACCURACY_HEADER = (
    "prompter",
    "test accuracy % (mean ± std)",
    "tunable params (prompt + head)",
    "prompt sparsity",
    "ops / image",
    "energy / image (Loihi)",
    "SNN / ANN twin",
)


def accuracy_rows(report: dict[str, Any], dataset: str) -> list[list[str]]:
    """One table row per prompter of ``dataset`` (cells as printed and as in the README)."""
    out = []
    for row in report["rows"]:
        if row["dataset"] != dataset:
            continue
        if row["synops_per_image"] is not None:
            ops = _si(row["synops_per_image"], "SynOps")
            energy = _energy(row["energy_per_image_pj"])
        elif row.get("ann_twin_macs_per_image") is not None:
            ops = _si(row["ann_twin_macs_per_image"], "MACs")
            energy = _energy(row["ann_twin_energy_per_image_pj"]) + " (MACs)"
        else:
            ops, energy = "–", "–"
        sparsity = row["prompt_sparsity_mean"]
        out.append(
            [
                f"`{row['prompter']}`",
                _pm(row["test_accuracy_mean"], row["test_accuracy_std"], 1, 100.0)
                + f" (n={row['seeds']})",
                f"{row['tunable_params']:,} ({row['prompt_params']:,} + {row['head_params']:,})",
                "–" if sparsity is None else f"{sparsity:.3f}",
                ops,
                energy,
                "–" if row["snn_over_ann_energy"] is None else f"{row['snn_over_ann_energy']:.3g}×",
            ]
        )
    return out


def _cost(report: dict[str, Any], entries: list[dict[str, Any]] | None = None) -> str:
    """What the report cost: its wall time, and when some runs were trained by an earlier call
    (and reused here), the training time summed over all of its runs, so the figure means the
    same whether the call trained them or not."""
    runs = report.get("runs", []) if entries is None else entries
    wall = f"Measured in {report['wall_seconds'] / 60:.1f} min on {report['machine']['cpu_count']} CPU core(s)"
    reused = sum(bool(r.get("reused")) for r in runs)
    if reused:
        trained = sum(r.get("train_seconds") or 0.0 for r in runs if "error" not in r)
        return (
            f"{wall}; {reused} of its {len(runs)} runs {'was' if reused == 1 else 'were'} trained "
            f"by an earlier call and reused "
            f"(training time summed over all {len(runs)} runs: {trained / 60:.0f} min, one thread "
            f"each)"
        )
    cpu = report.get("cpu_seconds")
    if not cpu:
        return wall
    jobs = report["settings"].get("jobs") or report["settings"].get("training", {}).get("jobs", 1)
    return f"{wall}, {cpu / 60:.0f} CPU-min (≥ {cpu / 60 / jobs:.0f} min on {jobs} idle cores)"


def _paired_seeds(settings: dict[str, Any]) -> str:
    extra = settings.get("paired_seeds") or []
    if not extra:
        return ""
    rows = sorted({label for pair in settings.get("comparisons", []) for label in pair})
    compared = ", ".join(f"`{label}`" for label in rows)
    return f" (and {', '.join(map(str, extra))} for {compared} on the primary datasets)"


def render_accuracy(report: dict[str, Any]) -> str:
    s = report["settings"]
    parts = [
        f"Frozen `{s['backbone']}` ({'ImageNet weights' if s['pretrained'] else 'random weights'}), "
        f"head `{s['head']}`, seeds {', '.join(map(str, s['seeds']))}{_paired_seeds(s)} (a "
        f"seed sets the initialisation, the data order and the split), batch {s['batch_size']}, learning rates "
        f"{s['lr']:g} base / {s['prompt_lr']:g} prompt / {s['head_lr']:g} head, cosine decay. "
        f"Test accuracy of the checkpoint best on validation. Sparsity: fraction of prompt pixels "
        f"exactly 0 over the test set. SynOps and energy from the trained `lorsp` spikes on "
        f"{s['energy_images']} test images (Norse, `hardware_sims` cost model, Loihi profile); the "
        f"`lorsp_ann` row is the ANN twin's MACs at {report.get('ann_twin_mac_pj', 4.6):g} pJ. "
        f"{_cost(report)} ({s['mode']} settings).",
    ]
    changed = s.get("prompter_options")
    if changed:
        options = ", ".join(f"`{name}={value}`" for name, value in changed.items())
        parts[0] += f" Prompter options changed from the registry defaults: {options}."
    paired = report.get("paired") or []
    for dataset, info in report["datasets"].items():
        line = budget_line(dataset, info["budget"])
        if info.get("secondary"):
            line += f". {info.get('note') or 'Secondary.'}"
        parts.append(line)
        parts.append(table(ACCURACY_HEADER, accuracy_rows(report, dataset)))
        comparisons = [p for p in paired if p["dataset"] == dataset]
        if comparisons:
            parts.append(
                "Paired over the same seeds (same split and data order), test accuracy:\n\n"
                + "\n".join(
                    f"- `{p['method']}` − `{p['baseline']}`: {paired_text(p)}" for p in comparisons
                )
            )
    return "\n\n".join(parts)


STEP_HEADER = (
    "image size",
    "batch",
    "method",
    "median step",
    "ms / image",
    "× backbone",
    "peak RSS (+ during step)",
)


def _memory(entry: dict[str, Any]) -> str:
    peak, start = entry.get("peak_memory_mib"), entry.get("start_memory_mib")
    if peak is None:
        return "–"
    extra = "" if start is None else f" (+{peak - start:,.0f})"
    return f"{peak:,.0f} MiB{extra}"


def step_rows(report: dict[str, Any]) -> list[list[str]]:
    out = []
    for entry in report["step_time"]:
        base = entry["methods"]["backbone"]["median_s"]
        for name, m in entry["methods"].items():
            out.append(
                [
                    f"{entry['image_size']} px",
                    str(entry["batch_size"]),
                    f"`{name}`",
                    f"{m['median_s'] * 1e3:,.1f} ms",
                    f"{m['median_s'] * 1e3 / entry['batch_size']:,.2f}",
                    f"{m['median_s'] / base:.2f}",
                    _memory(m),
                ]
            )
    return out


SIM_HEADER = (
    "image size",
    "pixel neurons",
    "Norse / image",
    "Lava float / image",
    "Lava / Norse",
    "Norse peak RSS",
    "Lava peak RSS",
)


def simulation_rows(report: dict[str, Any]) -> list[list[str]]:
    out = []
    for entry in report["simulation"]:
        norse, lava = entry["norse"], entry["lava"]
        out.append(
            [
                f"{entry['image_size']} px",
                f"{entry['neurons']:,}",
                f"{norse['per_image_s'] * 1e3:,.2f} ms",
                f"{lava['per_image_s'] * 1e3:,.1f} ms",
                "–" if entry["lava_over_norse"] is None else f"{entry['lava_over_norse']:,.0f}×",
                _memory(norse),
                _memory(lava),
            ]
        )
    return out


def render_speed(report: dict[str, Any]) -> str:
    s = report["settings"]
    parts = [
        f"Training step (forward, loss, backward, AdamW) of frozen `{s['backbone']}` with a linear "
        f"probe: `backbone` has no prompt but still back-propagates to the input, as every prompt "
        f"must; methods interleaved, {s['reps']} repetitions each after {s['warmup']} warm-up, "
        f"median; {s['num_threads']} torch thread(s) on {report['machine']['cpu_count']} CPU "
        f"core(s). Peak RSS: the whole process (Python, torch, all four models) during that step, "
        f"in brackets how much the step added.",
        table(STEP_HEADER, step_rows(report)),
    ]
    for entry in report["step_time"]:
        r = entry["ratios"]
        line = (
            f"- {entry['image_size']} px: LoRSP step = **{r['lorsp_over_backbone']:.2f}×** the "
            f"backbone-only step, LoR-VP {r['lor_vp_over_backbone']:.2f}×; LoRSP / LoR-VP "
            f"{r['lorsp_over_lor_vp']:.2f}×."
        )
        inference = entry.get("inference_ratios")
        if inference:
            line += (
                f" Inference (eval, no gradient, prompt + backbone + head): LoRSP / LoR-VP "
                f"**{inference['lorsp_over_lor_vp']:.2f}×**, LoRSP / backbone "
                f"{inference['lorsp_over_backbone']:.2f}×."
            )
        parts.append(line)
    parts.append(
        f"Spiking prompter (T = {s['sim_steps']} steps, inference, untrained, on real Fashion-MNIST "
        f"test images) per image: Norse (float32 torch, one batch of {s['sim_images']} images: "
        f"batch time / {s['sim_images']}) against Lava `floating_pt` through the worker (images "
        f"back to back: marginal cost (t({s['sim_images']}) − t(1)) / {s['sim_images'] - 1}, so "
        f"Lava's start-up of a few seconds, in the JSON, is not spread over the images). Peak "
        f"RSS: Norse's process during the run; the largest process of the Lava run."
    )
    parts.append(table(SIM_HEADER, simulation_rows(report)))
    growth = {name: b for name, b in report.get("growth", {}).items() if b is not None}
    if growth:
        parts.append(
            "Cost per image grows as pixels^b: "
            + ", ".join(f"{name} b = {b:.2f}" for name, b in growth.items())
            + " (least-squares fit over the sizes; b = 1: linear in the number of pixel neurons)."
        )
    return "\n\n".join(parts)


GPU_HEADER = ("method", "median step", "images / s", "× backbone", "peak CUDA memory")


def render_gpu(report: dict[str, Any]) -> str:
    s = report["settings"]
    parts = []
    for entry in report["step_time"]:
        base = entry["methods"]["backbone"]["median_s"]
        rows = [
            [
                f"`{name}`",
                f"{m['median_s'] * 1e3:,.1f} ms",
                f"{m['images_per_second']:,.0f}",
                f"{m['median_s'] / base:.2f}",
                "–" if m.get("peak_memory_mib") is None else f"{m['peak_memory_mib']:,.0f} MiB",
            ]
            for name, m in entry["methods"].items()
        ]
        backbone = entry.get("backbone") or s.get("backbone")
        parts.append(
            f"`{backbone}` (random weights) at {entry['image_size']} px, batch "
            f"{entry['batch_size']}, {s['device_name']}, AMP {'on' if s['amp'] else 'off'}, "
            f"{s['reps']} interleaved repetitions, median."
        )
        parts.append(table(GPU_HEADER, rows))
    return "\n\n".join(parts)


FRONTIER_HEADER = (
    "target sparsity",
    "`lorsp` test acc. %",
    "`lorsp` sparsity",
    "baseline",
    "baseline test acc. %",
    "baseline sparsity",
    "paired difference, points (95 % CI)",
    "seeds won",
    "verdict",
)


def frontier_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per target sparsity (the dense pair first)."""
    out = []
    for point in report["points"]:
        method, baseline = point["method_result"], point["baseline_result"]
        paired = point.get("paired")
        if paired:
            low, high = paired["ci95"]
            difference = (
                f"{100 * paired['mean']:+.1f} ({_num(low, 1, 100.0)} … {_num(high, 1, 100.0)})"
            )
            won = f"{paired['wins']}/{len(paired['differences'])}"
        else:
            difference, won = "–", "–"
        target = point["target_sparsity"]
        out.append(
            [
                "natural (dense pair)" if target is None else f"{target:g}",
                _pm(method["test_accuracy_mean"], method["test_accuracy_std"], 1, 100.0),
                _num(method["prompt_sparsity_mean"], 3),
                f"`{point['baseline']}`",
                _pm(baseline["test_accuracy_mean"], baseline["test_accuracy_std"], 1, 100.0),
                _num(baseline["prompt_sparsity_mean"], 3),
                difference,
                won,
                paired["verdict"] if paired else "–",
            ]
        )
    return out


def render_frontier(report: dict[str, Any]) -> str:
    s = report["settings"]
    data, training = s["dataset"], s["training"]
    seeds = ", ".join(map(str, training["seeds"]))
    intro = (
        f"`{data['name']}`, {data['train_size']:,} train / {data['val_size']:,} val / "
        f"{data['test_size']:,} test images at {training['image_size']} px, head "
        f"`{training['head']}`, seeds {seeds}, the accuracy table's budget. `lorsp` reaches a "
        f"target with the θ controller (which pixels are zero is decided per image by the "
        f"neurons); `{s['baseline']}` zeroes LoR-VP's smallest-|P| entries with a mask fixed at "
        f"mid-training (the same values made sparse by a fixed mask). Sparsity: fraction of "
        f"prompt pixels exactly 0 over the test set. Paired difference: `lorsp` − baseline per "
        f"seed (same split and data order), mean and 95 % t-interval; the verdict reads the "
        f"interval only. {_cost(report)}."
    )
    parts = [intro, table(FRONTIER_HEADER, frontier_rows(report))]
    holds = report.get("holds") or []
    if holds:
        parts.append(
            f"Does the controller hold its target beyond Fashion-MNIST (whose black background "
            f"gives zeros for free)? s* = {holds[0]['target']:g}, seed "
            f"{s['training']['seeds'][0]}, each dataset at the accuracy table's budget:"
        )
        parts.append(
            table(
                (
                    "check",
                    "`lorsp` test sparsity",
                    "`lorsp` test acc. %",
                    f"`{s['baseline']}` test acc. %",
                ),
                [
                    [
                        h["check"],
                        _num(h["method_prompt_sparsity"], 3),
                        _num(h["method_test_accuracy"], 1, 100.0),
                        _num(h["baseline_test_accuracy"], 1, 100.0),
                    ]
                    for h in holds
                ],
            )
        )
    return "\n\n".join(parts)


def render_energy(report: dict[str, Any]) -> str:
    """The trained variants' energy per image under each profile, with the ANN twin and the
    backbone beside them."""
    rows = [r for r in report["rows"] if "error" not in r]
    if not rows:
        return "No energy row finished."
    profiles = rows[0]["profiles"]
    header = ["`lorsp` variant", "pixel neurons", "test acc. %", "sparsity", "SynOps / image"]
    for name in profiles:
        header += [f"{name}: SNN", f"{name}: ANN twin", f"{name}: SNN / ANN"]
    lines = []
    for r in rows:
        where = "per pixel" if r["grid"] is None else f"grid {r['grid']}"
        cells = [
            f"{where}, T = {r['steps']}",
            f"{r['pixel_neurons']:,}",
            _num(r["test_accuracy"], 1, 100.0),
            _num(r["prompt_sparsity"], 3),
            _si(r["synops_per_image"], ""),
        ]
        for name in profiles:
            cells += [
                _energy(r["energy_per_image_pj"][name]),
                _energy(r["ann_twin_energy_pj"][name]),
                f"{r['snn_over_ann_energy'][name]:.3g}×",
            ]
        lines.append(cells)
    s = report["settings"]
    first = rows[0]
    backbone = ""
    if first.get("backbone_macs_per_image"):
        energies = ", ".join(
            f"{_energy(first['backbone_energy_pj'][name])} ({name} MAC figure)" for name in profiles
        )
        backbone = (
            f" The frozen backbone (`{first['backbone']}`, {s['training']['image_size']} px) "
            f"itself costs {_si(first['backbone_macs_per_image'], 'MACs')} per image: {energies}."
        )
    intro = (
        f"Each variant trained at its own setting on `{s['dataset']['name']}` (seed {s['seed']}, "
        f"the accuracy table's budget and {s['training']['image_size']} px); SynOps, neuron "
        f"updates and energy per image from its Norse spikes on {s['energy_images']} test images "
        f"(`hardware_sims` cost model; graded inputs presented once). ANN twin: the same "
        f"synapses as clipped ReLUs, one pass, every MAC paid.{backbone} "
        f"{_cost(report, report['rows'])}."
    )
    return intro + "\n\n" + table(header, lines)
