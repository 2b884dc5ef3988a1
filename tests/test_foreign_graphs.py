"""NIR files from other producers: a time step from the command line (``--dt``), a reset the file
cannot state (``--reset-mode``), and Input/Output shapes with extra size-1 dimensions."""

from __future__ import annotations

import json
import warnings

import nir
import numpy as np
import pytest
import torch

from exporters.graph_rules import NIRGraphError, NIRShapeWarning, infer_shapes
from exporters.importer import import_nir
from exporters.overrides import with_reset_mode
from exporters.semantics import RESET_KEY, discretize, step
from exporters.validate import write_nir
from hardware_sims.cosim import CosimError, cosimulate
from hardware_sims.estimate import estimate_energy
from hardware_sims.graph import GraphError
from lorsp_app.cli import main as cli_main
from lorsp_neuro.errors import LorspError

DT = 1e-3


def chain(dt: float | None = DT, reset: str | None = None, in_shape=(3,), out_shape=(2,)):
    """``x (3) → Linear (2×3) → LIF (2) → y``, as another tool might write it."""
    metadata = {} if reset is None else {RESET_KEY: reset}
    weight = np.array([[5.0, 2.5, 0.0], [1.0, 1.5, 2.0]])
    lif = nir.LIF(
        tau=np.full(2, 0.01),
        r=np.ones(2),
        v_leak=np.zeros(2),
        v_threshold=np.ones(2),
        metadata=metadata,
    )
    return nir.NIRGraph(
        nodes={
            "x": nir.Input({"input": np.array(in_shape)}),
            "w": nir.Linear(weight=weight),
            "n": lif,
            "y": nir.Output({"output": np.array(out_shape)}),
        },
        edges=[("x", "w"), ("w", "n"), ("n", "y")],
        metadata={} if dt is None else {"dt": dt},
        type_check=False,  # nir's own check refuses the size-1 dimensions accepted here
    )


def drive(steps: int = 60, batch: int = 2) -> torch.Tensor:
    return torch.full((steps, batch, 3), 1.2, dtype=torch.float64)


# --------------------------------------------------------------------------------------------
# --dt


def test_energy_of_a_graph_without_dt_needs_dt_and_the_error_names_the_option(tmp_path, capsys):
    path = write_nir(chain(dt=None), tmp_path / "no_dt.nir")
    with pytest.raises(GraphError, match="--dt SECONDS"):
        estimate_energy(path, images=2, steps=5)
    assert cli_main(["energy", str(path), "--steps", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--dt SECONDS" in err and "\n" not in err


@pytest.mark.parametrize("simulator", ["torch", "reference"])
def test_energy_with_dt_equals_the_graph_that_records_it(tmp_path, simulator):
    bare = write_nir(chain(dt=None), tmp_path / "no_dt.nir")
    recorded = write_nir(chain(dt=DT), tmp_path / "dt.nir")
    given = estimate_energy(bare, images=2, steps=20, simulator=simulator, dt=DT)
    stored = estimate_energy(recorded, images=2, steps=20, simulator=simulator)
    assert given.counts.spikes_per_image > 0
    assert given.counts.to_dict() == stored.counts.to_dict()
    slower = estimate_energy(bare, images=2, steps=20, simulator=simulator, dt=DT / 4)
    assert slower.counts.spikes_per_image < given.counts.spikes_per_image  # dt is used


def test_energy_command_takes_dt(tmp_path):
    path = write_nir(chain(dt=None), tmp_path / "no_dt.nir")
    out = tmp_path / "energy.json"
    args = ["energy", str(path), "--steps", "20", "--dt", "0.001", "--json", str(out)]
    assert cli_main(args) == 0
    assert json.loads(out.read_text())["activity"]["spikes_per_image"] > 0
    with pytest.raises(SystemExit):
        cli_main(["energy", str(path), "--steps", "20", "--dt", "-1"])


def test_dt_and_reset_mode_do_not_apply_to_a_run_directory(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CosimError, match="apply to NIR files"):
        cosimulate(tmp_path, dt=DT)
    with pytest.raises(CosimError, match="apply to NIR files"):
        cosimulate(tmp_path, reset_mode="subtract")


# --------------------------------------------------------------------------------------------
# --reset-mode


def reference_run(graph, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spikes and voltages of ``n`` from :func:`exporters.semantics.step`, the reference."""
    coeffs = discretize(graph.nodes["n"], DT)
    u, v = coeffs.initial_state((inputs.shape[1],))
    weight = graph.nodes["w"].weight
    spikes, voltages = [], []
    for x in inputs:
        z, u, v = step(coeffs, u, v, x @ weight.T)
        spikes.append(z)
        voltages.append(v)
    return np.array(spikes), np.array(voltages)


@pytest.mark.parametrize("mode", ["zero", "subtract"])
def test_import_with_a_reset_mode_steps_as_the_semantics_say(mode):
    graph = chain()
    run = import_nir(graph, reset_mode=mode)({"x": drive()}, record=("spikes", "v"))
    expected = reference_run(with_reset_mode(graph, mode), drive().numpy())
    np.testing.assert_array_equal(run.records["n"]["spikes"].numpy(), expected[0])
    np.testing.assert_allclose(run.records["n"]["v"].numpy(), expected[1], rtol=0, atol=1e-12)
    assert graph.nodes["n"].metadata == {}  # the caller's graph is left alone


def test_reset_mode_overrides_the_metadata_and_changes_the_spikes():
    def spikes(graph, mode):
        run = import_nir(graph, reset_mode=mode)({"x": drive()}, record=("spikes", "v"))
        return run.records["n"]["spikes"]

    plain, subtracting = chain(), chain(reset="subtract")
    assert torch.equal(spikes(plain, None), spikes(plain, "zero"))
    assert torch.equal(spikes(subtracting, "zero"), spikes(plain, None))
    assert torch.equal(spikes(plain, "subtract"), spikes(subtracting, None))
    assert spikes(plain, "subtract").sum() > spikes(plain, "zero").sum()
    with pytest.raises(LorspError, match="reset_mode must be one of zero, subtract"):
        import_nir(plain, reset_mode="hold")


def test_cosim_with_subtractive_reset_is_refused_naming_the_node(tmp_path, capsys):
    path = write_nir(chain(), tmp_path / "g.nir")
    with pytest.raises(CosimError, match=r"node 'n': reset_mode 'subtract'.*--reset-mode subtract"):
        cosimulate(path, images=1, steps=5, reset_mode="subtract")
    assert cli_main(["cosim", str(path), "--steps", "5", "--reset-mode", "subtract"]) == 2
    err = capsys.readouterr().err.strip()
    assert "node 'n'" in err and "--reset-mode subtract" in err and "\n" not in err


@pytest.mark.lava
@pytest.mark.slow
def test_cosim_command_takes_dt_and_reset_mode_for_a_foreign_file(tmp_path, capsys):
    """No dt in the file, and a metadata reset Lava cannot run: both given on the command line."""
    path = write_nir(chain(dt=None, reset="subtract"), tmp_path / "g.nir")
    out = tmp_path / "cosim.json"
    args = ["cosim", str(path), "--steps", "20", "--dt", "0.001", "--reset-mode", "zero"]
    assert cli_main([*args, "--json", str(out)]) == 0, capsys.readouterr()
    report = json.loads(out.read_text())
    assert report["total"]["spike_agreement"] == 1.0 and report["total"]["spikes_torch"] > 0


# --------------------------------------------------------------------------------------------
# Input/Output shapes with size-1 dimensions


def test_unit_dims_on_input_and_output_are_accepted_with_a_warning():
    graph = chain(in_shape=(1, 3), out_shape=(1, 2))
    with pytest.warns(NIRShapeWarning) as caught:
        shapes = infer_shapes(graph)
    messages = " ".join(str(w.message) for w in caught)
    assert "'x'" in messages and "'y'" in messages and "size-1" in messages
    assert shapes.inputs["x"] == (1, 3) and shapes.outputs["x"] == (3,)
    assert shapes.outputs["y"] == (2,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NIRShapeWarning)
        module = import_nir(graph)
    data = drive().unsqueeze(2)  # (T, B, 1, 3): the declared shape
    run = module({"x": data}, record=("spikes",))
    plain = import_nir(chain())({"x": drive()}, record=("spikes",))
    assert torch.equal(run.records["n"]["spikes"], plain.records["n"]["spikes"])
    assert torch.equal(run.outputs["y"], plain.outputs["y"])


def test_a_unit_dim_before_a_neuron_or_scale_is_accepted():
    for node in (
        nir.Scale(scale=np.ones(3)),
        nir.LIF(tau=np.full(3, 0.01), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3)),
    ):
        graph = nir.NIRGraph(
            nodes={
                "x": nir.Input({"input": np.array([3, 1])}),
                "a": node,
                "y": nir.Output({"output": np.array([3])}),
            },
            edges=[("x", "a"), ("a", "y")],
            metadata={"dt": DT},
            type_check=False,
        )
        with pytest.warns(NIRShapeWarning, match=r"declares shape \(3, 1\)"):
            assert infer_shapes(graph).outputs["x"] == (3,)


@pytest.mark.parametrize(
    ("in_shape", "out_shape", "culprit"),
    [((2, 3), (2,), "w"), ((4,), (2,), "w"), ((3,), (2, 2), "y"), ((3,), (4, 1), "y")],
)
def test_shapes_that_differ_by_more_than_unit_dims_are_still_refused(in_shape, out_shape, culprit):
    with warnings.catch_warnings():
        warnings.simplefilter("error", NIRShapeWarning)
        with pytest.raises(NIRGraphError, match=f"'{culprit}'"):
            infer_shapes(chain(in_shape=in_shape, out_shape=out_shape))


def test_matching_shapes_give_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", NIRShapeWarning)
        infer_shapes(chain())
