"""The fused LIF time loop (``lif_sequence``) against Norse's ``LIFCell`` stepped by hand.

The fused loop exists for speed only; these tests pin that it is the Norse cell: the same spikes,
voltages and currents bit for bit, and the gradient of the unrolled Norse graph.
"""

from __future__ import annotations

import pytest
import torch

from lorsp_neuro.neurons import lif_sequence, make_cell
from lorsp_neuro.prompters import create_prompter


def _norse_run(cell, inputs):
    state, spikes, voltages, currents = None, [], [], []
    for x in inputs:
        i_before = torch.zeros_like(x) if state is None else state.i
        z, state = cell(x, state)
        spikes.append(z)
        voltages.append(state.v)
        currents.append(i_before + x)
    return torch.stack(spikes), torch.stack(voltages), torch.stack(currents)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("tau_mem_inv", "tau_syn_inv", "v_th"),
    [(500.0, 0.0, 1.0), (500.0, 1000.0, 1.0), (300.0, 200.0, 0.3)],
)
def test_fused_loop_is_norse_bit_for_bit_and_has_its_gradient(
    dtype, tau_mem_inv, tau_syn_inv, v_th
):
    torch.manual_seed(0)
    cell = make_cell(
        "LIFCell", dt=1e-3, tau_mem_inv=tau_mem_inv, tau_syn_inv=tau_syn_inv, v_th=v_th
    )
    base = (torch.randn(6, 5, 40, dtype=dtype) * 1.5 + 0.8).requires_grad_()
    weights = torch.randn(6, 5, 40, dtype=dtype)
    expected = _norse_run(cell, base)
    fused = lif_sequence(base, cell)
    assert 0.05 < float(expected[0].mean()) < 0.95  # both spiking and silent neurons
    for got, want in zip(fused, expected, strict=True):
        assert torch.equal(got, want)
    (grad_norse,) = torch.autograd.grad((expected[0] * weights).sum(), base)
    (grad_fused,) = torch.autograd.grad((fused.spikes * weights).sum(), base)
    assert grad_fused.abs().sum() > 0
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(grad_fused, grad_norse, rtol=tolerance, atol=tolerance)


def test_fused_loop_refuses_a_cell_it_does_not_implement():
    cell = make_cell("LIFCell", dt=1e-3, tau_mem_inv=500.0, tau_syn_inv=0.0, v_th=1.0)
    cell.p = cell.p._replace(v_leak=torch.tensor(0.5))
    with pytest.raises(ValueError, match="v_leak = v_reset = 0"):
        lif_sequence(torch.zeros(2, 3), cell)


def test_prompter_core_fused_and_step_by_step_agree():
    torch.manual_seed(2)
    prompter = create_prompter("lorsp", 16, pixel_bias_init=0.5, target_sparsity=0.5).train()
    with torch.no_grad():
        prompter.spiking_core.value_left.normal_(0.0, 0.3)
    x = torch.rand(3, 3, 16, 16)
    records, grads = [], []
    for fused in (True, False):
        prompter.spiking_core.fused = fused
        prompter.zero_grad()
        record = prompter.run_core(x, record_currents=True)
        out = prompter(x)
        (out.prompted.square().mean() + out.stats["reg_loss"]).backward()
        records.append(record)
        grads.append({n: p.grad.clone() for n, p in prompter.named_parameters()})
    for got, want in zip(records[0], records[1], strict=True):
        assert torch.equal(got, want)
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], rtol=1e-5, atol=1e-6), name
