"""Fuzzing every way a NIR file enters the toolkit (files from strangers).

Valid graphs are written with ``nir.write`` and then damaged, either byte by byte (truncated,
flipped, overwritten, random) or through h5py (wrong types, NaN/Inf, mismatched shapes, unknown
node types, edges to missing nodes, cycles without neurons, huge declared shapes, links, external
storage, broken LoRSP metadata). Each case must end, within a deadline, in a ``NIRFileError`` whose
one-line message names the file, or, when the damage still left a valid graph, every consumer of
a loaded graph (summary, torch importer, numpy reference, the Lava mapper's plan, the LoRSP host
metadata) must either run it or refuse it with a :class:`~lorsp_neuro.errors.LorspError`.

The number of cases each test ran is printed (``fuzz[...]: N cases``) even without ``-s``, and
every test asserts it ran its full quota. ``LORSP_FUZZ_SCALE`` multiplies the quotas.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import h5py
import nir
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from exporters.importer import import_nir
from exporters.lorsp_export import METADATA_KEY, export_lorsp, lorsp_host, prompt_from_nir
from exporters.summary import format_summary, json_ready, summarize_graph
from exporters.validate import NIRFileError, NIRLimits, load_nir, write_nir
from hardware_sims.cosim import prepare_workload
from hardware_sims.graph import analyse, load_graph
from hardware_sims.plan import build_plan
from hardware_sims.reference import simulate_float
from lorsp_neuro.errors import LorspError
from lorsp_neuro.prompters import create_prompter

SCALE = float(os.environ.get("LORSP_FUZZ_SCALE", "1"))
BYTE_CASES = max(1, round(450 * SCALE))
STRUCTURE_CASES = max(1, round(560 * SCALE))
#: The fork-isolated parse must give up on a libhdf5 hang long before the case deadline.
FUZZ_LIMITS = NIRLimits(max_read_seconds=5)
CASE_DEADLINE_S = 30

FUZZ = settings(
    deadline=timedelta(seconds=CASE_DEADLINE_S),
    derandomize=True,  # the same cases on every CI run; raise LORSP_FUZZ_SCALE to explore more
    database=None,
    # Shrinking slow file cases can take many minutes; the failing draws are printed anyway.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)

CASES: Counter = Counter()
DT = 1e-3
NIR_TYPES = (
    "Affine", "AvgPool2d", "Conv1d", "Conv2d", "CubaLI", "CubaLIF", "Delay", "Flatten", "I", "IF",
    "Input", "LI", "LIF", "Linear", "NIRGraph", "Output", "Scale", "SumPool2d", "Threshold",
)  # fmt: skip
STRANGE_TYPES = ("", "Identity", "NoSuchNode", "__class__", "Dict", "LIF\x00", "lif", "NIRNode")


def report_cases(capsys, record_property, target: str, minimum: int) -> None:
    """Print the case counts of ``target`` (visible without ``-s``) and check the quota ran."""
    counts = {k[1]: v for k, v in CASES.items() if k[0] == target}
    total = sum(counts.values())
    record_property(f"fuzz_cases_{target}", total)
    with capsys.disabled():
        detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        print(f"\nfuzz[{target}]: {total} cases ({detail})")
    assert total >= minimum, f"only {total} of {minimum} {target} cases ran"


# --------------------------------------------------------------------------------------------
# Valid seed graphs


def _lif(n: int, kind: str = "LIF") -> nir.NIRNode:
    ones, zeros = np.ones(n), np.zeros(n)
    if kind == "CubaLIF":
        return nir.CubaLIF(
            tau_syn=ones * 2e-3, tau_mem=ones * 5e-3, r=ones, v_leak=zeros,
            v_threshold=ones * 0.5, v_reset=zeros, w_in=ones,
        )  # fmt: skip
    if kind == "IF":
        return nir.IF(r=ones * 500.0, v_threshold=ones, v_reset=zeros)
    return nir.LIF(tau=ones * 4e-3, r=ones, v_leak=zeros, v_threshold=ones * 0.5, v_reset=zeros)


def chain_seed() -> nir.NIRGraph:
    rng = np.random.default_rng(0)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([4])}),
        "affine": nir.Affine(weight=rng.normal(size=(3, 4)) * 20, bias=np.full(3, 0.5)),
        "cuba": _lif(3, "CubaLIF"),
        "linear": nir.Linear(weight=rng.normal(size=(2, 3)) * 20),
        "lif": _lif(2),
        "output": nir.Output(output_type={"output": np.array([2])}),
    }
    names = list(nodes)
    return nir.NIRGraph(nodes, list(itertools.pairwise(names)), {"dt": DT})


def conv_seed() -> nir.NIRGraph:
    rng = np.random.default_rng(1)
    population = (2, 4, 4)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([1, 6, 6])}),
        "conv": nir.Conv2d(
            input_shape=(6, 6),
            weight=rng.normal(size=(2, 1, 3, 3)) * 10,
            stride=1,
            padding=0,
            dilation=1,
            groups=1,
            bias=np.zeros(2),
        ),
        "if": nir.IF(
            r=np.full(population, 500.0),
            v_threshold=np.ones(population),
            v_reset=np.zeros(population),
        ),
        "flat": nir.Flatten(input_type={"input": np.array(population)}, start_dim=0, end_dim=-1),
        "dense": nir.Linear(weight=rng.normal(size=(3, 32)) * 5),
        "lif": _lif(3),
        "output": nir.Output(output_type={"output": np.array([3])}),
    }
    names = list(nodes)
    return nir.NIRGraph(nodes, list(itertools.pairwise(names)), {"dt": DT}, type_check=False)


def recurrent_seed() -> nir.NIRGraph:
    """``input → affine → lif → output`` with ``lif → recurrent (Linear) → lif``."""
    rng = np.random.default_rng(2)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([3])}),
        "affine": nir.Affine(weight=rng.normal(size=(3, 3)) * 20, bias=np.zeros(3)),
        "lif": _lif(3),
        "recurrent": nir.Linear(weight=rng.normal(size=(3, 3))),
        "scale": nir.Scale(scale=np.full(3, 2.0)),
        "output": nir.Output(output_type={"output": np.array([3])}),
    }
    edges = [
        ("input", "affine"), ("affine", "lif"), ("lif", "recurrent"), ("recurrent", "lif"),
        ("lif", "scale"), ("scale", "output"),
    ]  # fmt: skip
    return nir.NIRGraph(nodes, edges, {"dt": DT}, type_check=False)


def lorsp_seed() -> nir.NIRGraph:
    """v2 (``lorsp-nir/2``) with a 2×2 grid, so every host field (grid, values) is in use."""
    torch.manual_seed(0)
    prompter = create_prompter("lorsp", 4, rank=1, steps=3, descriptor_pool=2, grid=2)
    with torch.no_grad():
        prompter.spiking_core.value_left.normal_(0.0, 0.3)
    return export_lorsp(prompter)


def lorsp_v1_seed() -> nir.NIRGraph:
    torch.manual_seed(0)
    prompter = create_prompter("lorsp_v1", 4, factors=2, rank=1, steps=3, descriptor_pool=2)
    return export_lorsp(prompter)


#: Seed name → (builder, the consumers that refuse the valid seed).
SEED_BUILDERS = {
    "chain": (chain_seed, []),
    "conv": (conv_seed, []),
    "recurrent": (recurrent_seed, []),
    "lorsp": (lorsp_seed, []),
    "lorsp_v1": (lorsp_v1_seed, []),
}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    """The bytes of every seed's NIR file; each loads and runs cleanly (else fuzzing means little)."""
    folder = tmp_path_factory.mktemp("seeds")
    found = {}
    for name, (build, refusing) in SEED_BUILDERS.items():
        path = write_nir(build(), folder / f"{name}.nir")
        assert exercise(load_nir(path, FUZZ_LIMITS)) == refusing, name
        found[name] = path.read_bytes()
    return found


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cases")


_serial = itertools.count()


def fresh_file(workdir: Path, data: bytes) -> Path:
    path = workdir / f"case-{next(_serial)}.nir"
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------------------------
# The oracle


def _random_inputs(shapes: dict, steps: int, images_first: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    lead = (1, steps) if images_first else (steps, 1)
    return {name: rng.uniform(0, 1, size=(*lead, *shape)) for name, shape in shapes.items()}


def exercise(graph: nir.NIRGraph) -> list[str]:
    """Run every consumer of a loaded graph; return the consumers that refused it.

    A consumer may refuse with a one-line LorspError (an unsupported but valid graph); any other
    exception propagates and fails the test.
    """
    refused = []

    def attempt(name, action):
        try:
            return action()
        except LorspError as exc:
            assert "\n" not in str(exc), f"{name}: multi-line error {exc!r}"
            refused.append(name)
            return None

    summary = summarize_graph(graph)
    format_summary(summary, "case.nir")
    json_ready(summary)
    model = attempt("importer", lambda: import_nir(graph))
    if model is not None:
        attempt("importer.run", lambda: model(_random_inputs(model.input_shapes, 2, False)))
    network = attempt("analyse", lambda: analyse(graph))
    if network is not None:
        attempt("plan", lambda: build_plan(network, 2))
        inputs = _random_inputs(network.inputs, 2, True)
        attempt("reference", lambda: simulate_float(graph, inputs, 2))
    if METADATA_KEY in (graph.metadata or {}):
        host = attempt("lorsp_host", lambda: lorsp_host(graph))
        if host is not None and 0 < np.prod(host.image_size) <= 4096:
            image = torch.rand(1, 3, *host.image_size)
            attempt("prompt_from_nir", lambda: prompt_from_nir(graph, image))
    return refused


def check_rejection(exc: LorspError, path: Path) -> None:
    message = str(exc)
    assert str(path) in message, f"the error does not name the file: {message!r}"
    assert "\n" not in message, f"the error is not one line: {message!r}"


def load_or_reject(path: Path, target: str, entry=None) -> None:
    """Load ``path`` through ``entry`` (default load_nir); classify the outcome into CASES."""
    started = time.monotonic()
    try:
        graph = entry(path) if entry else load_nir(path, FUZZ_LIMITS)
    except NIRFileError as exc:
        check_rejection(exc, path)
        CASES[target, "rejected"] += 1
    except LorspError as exc:  # an entry point's own error type, or its refusal after loading
        assert entry is not None, f"load_nir raised {type(exc).__name__}, not NIRFileError"
        assert "\n" not in str(exc), f"the error is not one line: {exc}"
        CASES[target, "rejected" if str(path) in str(exc) else "refused after loading"] += 1
    else:
        if isinstance(graph, nir.NIRGraph):
            refused = exercise(graph)
            CASES[target, "accepted, a consumer refused" if refused else "accepted and ran"] += 1
        else:
            CASES[target, "accepted and ran"] += 1
    assert time.monotonic() - started < CASE_DEADLINE_S


# --------------------------------------------------------------------------------------------
# Byte-level damage


@st.composite
def damaged_bytes(draw, seeds: dict[str, bytes]) -> bytes:
    data = bytearray(seeds[draw(st.sampled_from(sorted(seeds)))])
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "random", "insert", "empty"]))
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            position = draw(st.integers(0, len(data) - 1))
            data[position] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if kind == "overwrite":
        position = draw(st.integers(0, len(data) - 1))
        data[position : position + 16] = draw(st.binary(min_size=1, max_size=16))
        return bytes(data)
    if kind == "insert":
        position = draw(st.integers(0, len(data)))
        return bytes(data[:position] + draw(st.binary(min_size=1, max_size=64)) + data[position:])
    if kind == "random":
        signature = draw(st.sampled_from([b"", b"\x89HDF\r\n\x1a\n"]))
        return signature + draw(st.binary(max_size=4096))
    return b""


def test_damaged_bytes_are_rejected_in_one_line_or_still_valid(
    seeds, workdir, capsys, record_property
):
    @settings(FUZZ, max_examples=BYTE_CASES)
    @given(data=damaged_bytes(seeds))
    def case(data):
        path = fresh_file(workdir, data)
        try:
            load_or_reject(path, "nir-bytes")
        finally:
            path.unlink()

    case()
    report_cases(capsys, record_property, "nir-bytes", BYTE_CASES)


# --------------------------------------------------------------------------------------------
# Structural damage through h5py


def _entries(handle: h5py.File, kind: type) -> list[str]:
    found = []
    handle["node"].visititems(
        lambda name, obj: found.append(f"node/{name}") if isinstance(obj, kind) else None
    )
    return sorted(found)


def _node_names(handle: h5py.File) -> list[str]:
    nodes = handle["node"].get("nodes")
    return sorted(nodes) if isinstance(nodes, h5py.Group) else []


def _replace(handle: h5py.File, path: str, value, dtype=None) -> None:
    if path in handle:
        del handle[path]
    if isinstance(value, str) and "\x00" in value:  # HDF5 variable-length strings cannot hold NUL
        value, dtype = np.bytes_(value.encode()), None
    handle.create_dataset(path, data=value, dtype=dtype)


def _small_value(dataset: h5py.Dataset):
    """The dataset's value, or a stand-in when an earlier mutation made it huge."""
    return dataset[()] if dataset.size <= 4096 else np.zeros(4)


SIZES = st.integers(0, 5) | st.sampled_from([2**31, 2**32, 2**33, 2**62])
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)


@st.composite
def strange_value(draw, original):
    """A replacement for a dataset: NaN/Inf inside, another shape, another type, or nonsense."""
    kind = draw(
        st.sampled_from(
            ["poison", "reshape", "retype", "text", "scalar", "big_ints", "empty", "extreme"]
        )
    )
    original = np.asarray(original)
    numeric = np.issubdtype(original.dtype, np.number) and original.size > 0
    if kind == "poison" and numeric:
        poisoned = original.astype(np.float64).copy()
        flat = poisoned.reshape(-1)
        flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        return poisoned, None
    if kind in ("reshape", "poison"):
        shape = tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
        values = draw(st.lists(FLOATS, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
        return np.asarray(values, dtype=np.float64).reshape(shape), None
    if kind == "retype":
        dtype = draw(
            st.sampled_from(
                ["int8", "uint8", "int64", "float16", "bool", "complex128", "S8", "str"]
            )
        )
        if dtype == "str":
            return np.asarray(original).astype(str).astype(object), h5py.string_dtype()
        try:
            return original.astype(dtype), None
        except (TypeError, ValueError):  # text that is no number: keep the shape, change the type
            return np.zeros(original.shape, dtype=dtype), None
    if kind == "text":
        text = draw(st.text(max_size=20))
        return text, h5py.string_dtype() if draw(st.booleans()) else None
    if kind == "scalar":
        return draw(FLOATS | st.integers(-(2**63), 2**63 - 1) | st.booleans()), None
    if kind == "big_ints":
        return np.asarray(draw(st.lists(SIZES, min_size=1, max_size=4)), dtype=np.int64), None
    if kind == "empty":
        return (np.zeros((0,)), None) if draw(st.booleans()) else (h5py.Empty("f8"), None)
    return np.full(original.shape or (1,), draw(st.sampled_from([1e308, -1e308, 5e-324]))), None


def mutate_value(handle, draw):
    paths = _entries(handle, h5py.Dataset)
    if not paths:
        return
    path = draw(st.sampled_from(paths))
    value, dtype = draw(strange_value(_small_value(handle[path])))
    _replace(handle, path, value, dtype)


def delete_entry(handle, draw):
    paths = _entries(handle, h5py.Dataset) + _entries(handle, h5py.Group)
    if paths:
        del handle[draw(st.sampled_from(paths))]


def set_node_type(handle, draw):
    names = _node_names(handle)
    if names:
        node = draw(st.sampled_from(names))
        kind = draw(st.sampled_from(NIR_TYPES + STRANGE_TYPES))
        _replace(handle, f"node/nodes/{node}/type", kind, h5py.string_dtype())


def set_edges(handle, draw):
    names = [*_node_names(handle), "ghost", ""]
    pairs = draw(st.lists(st.tuples(st.sampled_from(names), st.sampled_from(names)), max_size=8))
    edges = np.asarray(pairs, dtype=object).reshape(-1, 2) if pairs else np.zeros((0, 2), "S1")
    kind = draw(st.sampled_from(["pairs", "triples", "flat", "numbers"]))
    if kind == "triples" and pairs:
        edges = np.asarray([(*p, p[0]) for p in pairs], dtype=object)
    elif kind == "flat":
        edges = edges.reshape(-1)
    elif kind == "numbers":
        edges = np.arange(2 * len(pairs)).reshape(-1, 2)
    dtype = h5py.string_dtype() if edges.dtype == object else None
    _replace(handle, "node/edges", edges, dtype)


def add_cycle_without_neurons(handle, draw):
    """Two graded nodes feeding each other (or one feeding itself): never evaluable."""
    graded = [
        n for n in _node_names(handle)
        if handle[f"node/nodes/{n}/type"][()] in (b"Affine", b"Linear", b"Scale", b"Flatten")
    ]  # fmt: skip
    if not graded:
        return
    a, b = draw(st.sampled_from(graded)), draw(st.sampled_from(graded))
    edges = [tuple(e) for e in handle["node/edges"][()].tolist()]
    edges += [(a.encode(), b.encode()), (b.encode(), a.encode())]
    _replace(handle, "node/edges", np.asarray(edges, dtype=object), h5py.string_dtype())


def copy_or_rename_node(handle, draw):
    names = _node_names(handle)
    if not names:
        return
    node = draw(st.sampled_from(names))
    new = draw(
        st.text(st.characters(codec="ascii", exclude_characters="/."), min_size=1, max_size=8)
    )
    if f"node/nodes/{new}" in handle:
        return
    if draw(st.booleans()):
        handle.copy(f"node/nodes/{node}", f"node/nodes/{new}")
    else:
        handle.move(f"node/nodes/{node}", f"node/nodes/{new}")


def nest_graph(handle, draw):
    """Replace a node by a copy of the whole graph: nested NIRGraph nodes are not supported."""
    names = _node_names(handle)
    if names:
        node = draw(st.sampled_from(names))
        del handle[f"node/nodes/{node}"]
        handle.copy("node", f"node/nodes/{node}")


def group_for_dataset(handle, draw):
    paths = _entries(handle, h5py.Dataset)
    if paths:
        path = draw(st.sampled_from(paths))
        del handle[path]
        handle.create_group(path)


def strange_metadata(handle, draw):
    where = draw(
        st.sampled_from(
            ["node/metadata", *(f"node/nodes/{n}/metadata" for n in _node_names(handle))]
        )
    )
    key = draw(st.sampled_from(["dt", "reset_mode", "producer", "x"]))
    group = (
        handle.require_group(where)
        if where not in handle or isinstance(handle[where], h5py.Group)
        else None
    )
    if group is None:
        return
    value, dtype = draw(strange_value(np.asarray(DT)))
    _replace(handle, f"{where}/{key}", value, dtype)


def strange_lorsp_metadata(handle, draw):
    host = handle["node"].get(f"metadata/{METADATA_KEY}")
    if not isinstance(host, h5py.Group) or not len(host):
        return strange_metadata(handle, draw)
    key = draw(st.sampled_from(sorted(host)))
    if draw(st.booleans()):
        del host[key]
        return
    value, dtype = draw(strange_value(_small_value(host[key])))
    _replace(handle, f"{host.name}/{key}", value, dtype)


def link_elsewhere(handle, draw):
    """Links and storage outside the file: reading them would pull in other files."""
    paths = _entries(handle, h5py.Dataset)
    if not paths:
        return
    path = draw(st.sampled_from(paths))
    kind = draw(st.sampled_from(["external_link", "soft_link", "alias_loop", "external_storage"]))
    del handle[path]
    if kind == "external_link":
        handle[path] = h5py.ExternalLink("/etc/hostname", "/")
    elif kind == "soft_link":
        handle[path] = h5py.SoftLink("/node")
    elif kind == "alias_loop":
        handle[path] = handle["node"]
    else:
        handle.create_dataset(path, shape=(8,), dtype="u1", external=[("/etc/hostname", 0, 8)])


def declare_huge(handle, draw):
    """A dataset that declares up to terabytes but stores nothing: an HDF5 bomb."""
    paths = _entries(handle, h5py.Dataset)
    if paths:
        path = draw(st.sampled_from(paths))
        sizes = st.sampled_from([2**18, 2**20, 2**31, 2**40])
        shape = tuple(draw(st.lists(sizes, min_size=1, max_size=2)))
        del handle[path]
        chunks = tuple(min(n, 2**16) for n in shape)
        handle.create_dataset(path, shape=shape, dtype="f8", chunks=chunks, compression="gzip")


MUTATIONS = {
    "value": mutate_value,
    "delete": delete_entry,
    "node_type": set_node_type,
    "edges": set_edges,
    "cycle": add_cycle_without_neurons,
    "copy_or_rename": copy_or_rename_node,
    "nest": nest_graph,
    "group_for_dataset": group_for_dataset,
    "metadata": strange_metadata,
    "lorsp_metadata": strange_lorsp_metadata,
    "link": link_elsewhere,
    "huge": declare_huge,
}

#: Every entry point that opens a NIR file path; each must reject through load_nir.
ENTRY_POINTS = {
    "load_nir": None,
    "import_nir": lambda path: import_nir(path),
    "load_graph (Lava side)": lambda path: load_graph(path),
    "prepare_workload (cosim/energy)": lambda path: prepare_workload(path, 1, 2, path.parent),
}


def test_structurally_damaged_files_are_rejected_or_safe_to_use(
    seeds, workdir, capsys, record_property
):
    @settings(FUZZ, max_examples=STRUCTURE_CASES)
    @given(data=st.data())
    def case(data):
        seed = data.draw(st.sampled_from(sorted(seeds)), label="seed")
        path = fresh_file(workdir, seeds[seed])
        try:
            with h5py.File(path, "a") as handle:
                for _ in range(data.draw(st.integers(1, 3), label="mutations")):
                    kind = data.draw(st.sampled_from(sorted(MUTATIONS)), label="mutation")
                    # An earlier mutation can leave nothing for this one to work on (a link
                    # that h5py cannot follow, a deleted group): then it is skipped.
                    with contextlib.suppress(KeyError, OSError, ValueError, TypeError, MemoryError):
                        MUTATIONS[kind](handle, data.draw)
            entry = data.draw(st.sampled_from(sorted(ENTRY_POINTS)), label="entry point")
            load_or_reject(path, "nir-structure", ENTRY_POINTS[entry])
        finally:
            path.unlink()

    case()
    report_cases(capsys, record_property, "nir-structure", STRUCTURE_CASES)


# --------------------------------------------------------------------------------------------
# Targeted cases: each attack once, through every entry point


SECRET = "TOP-SECRET-7c2d"


@pytest.fixture
def leaking_file(tmp_path) -> Path:
    """A valid graph whose metadata 'producer' is stored in another local file (a secret)."""
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    path = write_nir(chain_seed(), tmp_path / "leak.nir")
    with h5py.File(path, "a") as handle:
        handle["node/metadata"].create_dataset(
            "producer", shape=(len(SECRET),), dtype="S1", external=[(str(secret), 0, len(SECRET))]
        )
    assert h5py.File(path, "r")["node/metadata/producer"][()].tobytes() == SECRET.encode()
    return path


def test_a_file_pulling_in_another_file_is_refused_by_every_entry_point(leaking_file, capsys):
    from lorsp_app.cli import main as cli_main

    entries = {
        **{name: entry or (lambda path: load_nir(path)) for name, entry in ENTRY_POINTS.items()},
        "prompt_from_nir": lambda path: prompt_from_nir(path, torch.zeros(1, 3, 4, 4)),
    }
    for name, entry in entries.items():
        with pytest.raises(LorspError) as caught:
            entry(leaking_file)
        message = str(caught.value)
        assert "keeps its data outside the file" in message and str(leaking_file) in message, name
        assert SECRET not in message
    for argv in (["nir-info"], ["energy", "--simulator", "reference", "--steps", "2"]):
        assert cli_main([*argv, str(leaking_file)]) == 2
        out, err = capsys.readouterr()
        assert "keeps its data outside the file" in err and SECRET not in out + err, argv


@pytest.mark.lava
@pytest.mark.slow
def test_the_lava_worker_refuses_the_same_file(leaking_file):
    from hardware_sims import LavaWorkerError, run_lava

    with pytest.raises(LavaWorkerError, match="keeps its data outside the file") as caught:
        run_lava(leaking_file, {"input": np.zeros((2, 4))}, 2, timeout=300)
    assert SECRET not in str(caught.value)


def test_an_hdf5_bomb_is_refused_before_anything_is_read(tmp_path):
    path = write_nir(chain_seed(), tmp_path / "bomb.nir")
    with h5py.File(path, "a") as handle:
        del handle["node/nodes/affine/weight"]
        handle["node/nodes/affine"].create_dataset(
            "weight", shape=(2**17, 2**17), dtype="f8", chunks=(256, 256), compression="gzip"
        )  # 128 GiB declared
    assert path.stat().st_size < 100_000
    with pytest.raises(NIRFileError, match=r"declare more than 2147483648 bytes .* 137438953472"):
        load_nir(path)
    # The limits are the caller's to set: a tighter one refuses even the intact graph.
    intact = write_nir(chain_seed(), tmp_path / "intact.nir")
    with pytest.raises(NIRFileError, match="declare more than 100 bytes"):
        load_nir(intact, NIRLimits(max_declared_bytes=100))


def test_a_parse_that_hangs_or_crashes_is_cut_off_in_its_child_process(tmp_path, monkeypatch):
    """The isolation itself, independent of which byte makes libhdf5 loop or crash."""
    from exporters import validate

    path = write_nir(chain_seed(), tmp_path / "g.nir")
    monkeypatch.setattr(validate, "_parse_nir", lambda *args, **kwargs: time.sleep(600))
    started = time.monotonic()
    with pytest.raises(NIRFileError, match=r"g\.nir: reading did not finish within 2 s"):
        load_nir(path, NIRLimits(max_read_seconds=2))
    assert time.monotonic() - started < 30
    monkeypatch.setattr(validate, "_parse_nir", lambda *args, **kwargs: os.abort())
    with pytest.raises(NIRFileError, match=r"the HDF5 library crashed reading it \(signal 6\)"):
        load_nir(path)
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    assert not children, f"the reader left child processes {children}"


def test_one_flipped_byte_in_the_string_heap_does_not_hang_load_nir(tmp_path):
    """Found by the byte fuzzing: with libhdf5 2.0 this byte makes H5Dread loop forever."""
    data = bytearray(write_nir(chain_seed(), tmp_path / "g.nir").read_bytes())
    heap = data.find(b"GCOL")
    assert heap > 0
    data[heap + 169] = 4
    path = tmp_path / "flipped.nir"
    path.write_bytes(bytes(data))
    started = time.monotonic()
    with contextlib.suppress(NIRFileError):
        load_nir(path, NIRLimits(max_read_seconds=5))
    assert time.monotonic() - started < 60
