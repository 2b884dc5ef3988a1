"""The exporter's table: every mapper's parameters, shapes, dt scaling, metadata and errors."""

from __future__ import annotations

import warnings

import nir
import numpy as np
import pytest
import torch
from norse.torch import (
    IAFCell,
    IAFParameters,
    LIBoxCell,
    LIBoxParameters,
    LICell,
    LIFBoxCell,
    LIFCell,
    LIFParameters,
    LIParameters,
    SequentialState,
    reset_subtract,
)
from norse.torch.module.lif_box import LIFBoxParameters

from exporters.export import EXPORTERS, NIRExportError, export_graph, export_sequential
from exporters.layers import Scale, SumPool2d, Threshold
from exporters.lorsp_export import export_lorsp
from exporters.semantics import RESET_KEY
from exporters.validate import write_nir
from lorsp_app.cli import main as cli_main
from lorsp_neuro.prompters import create_prompter

DT = 2e-3
TS, TM = 250.0, 125.0  # tau_syn_inv, tau_mem_inv (1/s)


def t(value):
    return torch.as_tensor(value, dtype=torch.float32)


#: Norse cell → (factory, expected NIR type, expected fields as functions of the population).
NEURON_CASES = {
    "LIFCell": (
        lambda: LIFCell(LIFParameters(t(TS), t(TM), t(0.1), t(0.9), t(-0.2)), dt=DT),
        nir.CubaLIF,
        {
            "tau_syn": 1 / TS,
            "tau_mem": 1 / TM,
            "r": 1.0,
            "w_in": 1 / (DT * TS),
            "v_leak": 0.1,
            "v_threshold": 0.9,
            "v_reset": -0.2,
        },
    ),
    "LIFBoxCell": (
        lambda: LIFBoxCell(LIFBoxParameters(t(TM), t(0.1), t(0.9), t(-0.2)), dt=DT),
        nir.LIF,
        {"tau": 1 / TM, "r": 1.0, "v_leak": 0.1, "v_threshold": 0.9, "v_reset": -0.2},
    ),
    "LICell": (
        lambda: LICell(LIParameters(t(TS), t(TM), t(0.1)), dt=DT),
        nir.CubaLI,
        {"tau_syn": 1 / TS, "tau_mem": 1 / TM, "r": 1.0, "w_in": 1 / (DT * TS), "v_leak": 0.1},
    ),
    "LIBoxCell": (
        lambda: LIBoxCell(LIBoxParameters(t(TM), t(0.1)), dt=DT),
        nir.LI,
        {"tau": 1 / TM, "r": 1.0, "v_leak": 0.1},
    ),
    "IAFCell": (
        lambda: IAFCell(IAFParameters(v_th=t(0.9), v_reset=t(-0.2)), dt=DT),
        nir.IF,
        {"r": 1 / DT, "v_threshold": 0.9, "v_reset": -0.2},
    ),
}


def test_every_norse_cell_in_the_table_has_a_case():
    norse_types = {cls.__name__ for cls in EXPORTERS if cls.__module__.startswith("norse")}
    assert {name for name in norse_types if name.endswith("Cell")} == set(NEURON_CASES)


@pytest.mark.parametrize("cell_name", sorted(NEURON_CASES))
def test_neuron_mapper_writes_per_neuron_arrays_at_the_right_time_scale(cell_name):
    factory, nir_type, expected = NEURON_CASES[cell_name]
    graph = export_sequential(SequentialState(torch.nn.Conv2d(1, 2, 3), factory()), (1, 5, 5))
    node = graph.nodes["1"]
    assert type(node) is nir_type
    for field, value in expected.items():
        array = np.asarray(getattr(node, field))
        assert array.shape == (2, 3, 3), f"{field}: scalars must be broadcast to the population"
        # float32 Norse parameters, inverted in float64: equal to float32 precision
        np.testing.assert_allclose(array, value, rtol=1e-6, err_msg=field)
    assert node.metadata[RESET_KEY] == "value"
    assert node.metadata["source"] == f"norse.torch.{cell_name}"


def test_time_constants_do_not_depend_on_dt_but_w_in_does():
    taus, w_ins = set(), set()
    for dt in (1e-4, 1e-3, 5e-3):
        cell = LIFCell(LIFParameters(tau_syn_inv=t(TS), tau_mem_inv=t(TM)), dt=dt)
        node = export_sequential(SequentialState(torch.nn.Linear(2, 3), cell), (2,)).nodes["1"]
        taus.add(float(node.tau_mem[0]))
        w_ins.add(float(node.w_in[0]))
        assert float(node.tau_mem[0]) == 1 / TM  # Norse 1.1.0 writes dt/tau_mem_inv here
    assert len(taus) == 1 and len(w_ins) == 3


def test_per_neuron_norse_parameters_are_kept():
    tau_mem_inv = torch.tensor([50.0, 100.0, 200.0])
    cell = LIFBoxCell(LIFBoxParameters(tau_mem_inv=tau_mem_inv, v_th=torch.tensor(0.7)), dt=DT)
    node = export_sequential(SequentialState(torch.nn.Linear(2, 3), cell), (2,)).nodes["1"]
    np.testing.assert_allclose(node.tau, 1 / tau_mem_inv.double().numpy(), rtol=1e-15)
    np.testing.assert_allclose(node.v_threshold, np.full(3, 0.7), rtol=1e-6)


def test_subtractive_reset_is_recorded_and_v_reset_zeroed():
    params = LIFBoxParameters(v_reset=t(0.3), reset_method=reset_subtract)
    cell = LIFBoxCell(params, dt=DT)
    node = export_sequential(SequentialState(torch.nn.Linear(2, 3), cell), (2,)).nodes["1"]
    assert node.metadata[RESET_KEY] == "subtract"
    np.testing.assert_array_equal(
        node.v_reset, np.zeros(3)
    )  # Norse ignores v_reset when subtracting


def test_graded_mappers():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, stride=2, padding=1, dilation=1),
        torch.nn.AvgPool2d(2),
        SumPool2d((1, 1), (1, 1), (0, 0)),
        Scale(torch.tensor([1.0, 2.0, 3.0, 4.0]).view(4, 1, 1)),
        torch.nn.Flatten(),
        torch.nn.Dropout(0.5),
        torch.nn.Linear(16, 3),
        torch.nn.Identity(),
        torch.nn.Linear(3, 2, bias=False),
        Threshold(torch.tensor(0.5)),
    )
    graph = export_sequential(model, (2, 8, 8))
    kinds = {name: type(node).__name__ for name, node in graph.nodes.items()}
    assert kinds == {
        "input": "Input",
        "0": "Conv2d",
        "1": "AvgPool2d",
        "2": "SumPool2d",
        "3": "Scale",
        "4": "Flatten",
        "6": "Affine",
        "8": "Linear",
        "9": "Threshold",
        "output": "Output",
    }
    assert ("4", "6") in graph.edges and ("6", "8") in graph.edges  # Dropout, Identity bypassed
    conv = graph.nodes["0"]
    assert tuple(conv.stride) == (2, 2) and tuple(conv.padding) == (1, 1) and conv.groups == 1
    assert conv.weight.shape == (4, 2, 3, 3) and conv.weight.dtype == np.float64
    np.testing.assert_array_equal(graph.nodes["3"].scale[:, 0, 0], [1.0, 2.0, 3.0, 4.0])
    assert graph.nodes["3"].scale.shape == (4, 2, 2)
    assert graph.nodes["4"].start_dim == 0  # torch counts the batch, NIR does not
    assert graph.nodes["9"].threshold.shape == (2,)
    assert "dt" not in graph.metadata  # no neuron, no time step


def test_metadata_records_dt_producer_and_versions():
    model = SequentialState(torch.nn.Linear(2, 3), LIFCell(dt=DT))
    metadata = export_sequential(model, torch.zeros(7, 2), metadata={"note": "x"}).metadata
    assert metadata["dt"] == DT
    assert metadata["producer"] == "lorsp-neuro"
    assert metadata["producer_version"] == "0.1.0"
    assert metadata["norse_version"] == "1.1.0"
    assert metadata["note"] == "x"


def test_export_graph_with_two_inputs_into_one_population(tmp_path):
    cell = LIFBoxCell(dt=DT)
    graph = export_graph(
        {"fc": torch.nn.Linear(4, 3), "gain": Scale(torch.tensor(2.0)), "lif": cell},
        [("a", "fc"), ("b", "gain"), ("fc", "lif"), ("gain", "lif"), ("lif", "out")],
        {"a": (4,), "b": (3,)},
        ("out",),
    )
    assert graph.nodes["lif"].tau.shape == (3,)
    write_nir(graph, tmp_path / "two.nir")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read = nir.read(str(tmp_path / "two.nir"), type_check=True)
    assert sorted(read.edges) == sorted(graph.edges)


@pytest.mark.parametrize(
    ("model", "shape", "message"),
    [
        (torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU()), (2,), "node '1': .*ReLU"),
        (
            SequentialState(
                torch.nn.Linear(2, 3), LIFCell(dt=1e-3), torch.nn.Linear(3, 3), LIFCell(dt=2e-3)
            ),
            (2,),
            "different time steps",
        ),
        (torch.nn.Sequential(torch.nn.Conv2d(1, 1, (3, 1))), (1, 5, 5), "node '0'.*not square"),
        (torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3, groups=2)), (2, 5, 5), "node '0'.*groups"),
        (torch.nn.Sequential(torch.nn.Flatten(0)), (2, 3), "node '0'.*batch"),
        (torch.nn.Sequential(torch.nn.Linear(3, 2)), (2,), r"node '0' \(Affine\).*input.*\(2,\)"),
        (
            SequentialState(
                torch.nn.Linear(2, 3), LIFBoxCell(LIFBoxParameters(tau_mem_inv=torch.ones(4)))
            ),
            (2,),
            "node '1'.*tau_mem_inv.*population shape",
        ),
        (torch.nn.Linear(2, 3), (2,), "nn.Sequential"),
    ],
)
def test_export_errors_name_the_node(model, shape, message):
    with pytest.raises(NIRExportError, match=message):
        export_sequential(model, shape)


def test_written_file_is_atomic_and_reads_without_warnings(tmp_path):
    model = SequentialState(
        torch.nn.Conv2d(1, 2, 3, padding=1),
        LIFCell(dt=DT),
        torch.nn.Flatten(),
        torch.nn.Linear(32, 2),
    )
    path = write_nir(export_sequential(model, (1, 4, 4)), tmp_path / "sub" / "m.nir")
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.nir"]  # no temporary left over
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        graph = nir.read(str(path), type_check=True)
    assert graph.nodes["1"].tau_mem.shape == (2, 4, 4)


def test_only_spiking_prompters_export():
    with pytest.raises(NIRExportError, match="prompter 'lor_vp' has no spiking_core"):
        export_lorsp(create_prompter("lor_vp", 8))


def test_cli_help_has_examples(capsys):
    for command in ("export", "nir-info"):
        with pytest.raises(SystemExit) as exc:
            cli_main([command, "--help"])
        assert exc.value.code == 0
        assert f"example:\n  lorsp {command} " in capsys.readouterr().out
