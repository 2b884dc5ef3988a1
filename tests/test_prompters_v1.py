"""LoRSP v1 (``lorsp_v1``, ``lorsp_v1_ann``): kept registered so the v1 comparison stays reproducible.

The v1 properties (ON/OFF populations, ``alpha ⊙ (rate_on − rate_off)``, the factor weights), its
parameter counts and configs; the registry-wide tests in test_prompters.py cover it too.
"""

from __future__ import annotations

import prompter_inputs as _inputs  # tests/ is on pytest's pythonpath
import pytest
import torch

from lorsp_neuro.config_checks import ConfigError
from lorsp_neuro.prompters import create_prompter, polarity_factor_weight
from lorsp_neuro.prompters.lorsp_v1 import LoRSPSpikingCore

SIZE = _inputs.SIZE
_images, _foolbox_imagenet, _loss = _inputs.images, _inputs.foolbox_imagenet, _inputs.loss


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("lorsp_v1", "factors", 0),
        ("lorsp_v1", "rank", 1.5),
        ("lorsp_v1", "steps", 0),
        ("lorsp_v1", "descriptor_pool", True),
        ("lorsp_v1", "cell", "IFCell"),
        ("lorsp_v1", "dt", 0.0),
        ("lorsp_v1", "dt", 0.01),  # dt·tau_mem_inv = 5: unstable Euler step
        ("lorsp_v1", "tau_mem_inv", float("nan")),
        ("lorsp_v1", "gate_threshold", -1.0),
        ("lorsp_v1", "gate_rate_band", (0.6, 0.1)),
        ("lorsp_v1", "pixel_rate_band", (0.1, 2.0)),
        ("lorsp_v1", "gate_rate_band", "high"),
        ("lorsp_v1", "rate_reg_weight", -1.0),
        ("lorsp_v1", "gate_lr_scale", 0.0),
        ("lorsp_v1", "alpha_lr_scale", -1.0),
        ("lorsp_v1_ann", "factor_scale", 0.0),
        ("lorsp_v1_ann", "alpha_init", float("inf")),
    ],
)
def test_bad_config_value_raises_config_error_naming_the_field(name, field, value):
    with pytest.raises(ConfigError, match=field):
        create_prompter(name, 32, **{field: value})


@pytest.mark.parametrize(
    ("name", "fields", "expected"),
    [
        ("lorsp_v1", {"factors": 2, "rank": 2}, 2 * 1344 * 2 + 192 * 2 + 2 + 9),
        ("lorsp_v1_ann", {"factors": 2, "rank": 2}, 2 * 1344 * 2 + 192 * 2 + 2 + 9),
        ("lorsp_v1", {"factors": 3, "rank": 1, "descriptor_pool": 4}, 3 * 1344 + 48 * 3 + 3 + 9),
    ],
)
def test_parameter_counts_at_224_match_design_md(name, fields, expected):
    assert create_prompter(name, 224, **fields).num_tunable_parameters() == expected


@pytest.mark.parametrize("name", ["lorsp_v1", "lorsp_v1_ann"])
def test_lorsp_gate_and_alpha_get_their_own_learning_rates(name):
    prompter = create_prompter(name, SIZE, gate_lr_scale=0.1, alpha_lr_scale=5.0)
    groups = {g["name"]: g for g in prompter.param_groups(1e-2)}
    core = prompter.spiking_core if name == "lorsp_v1" else prompter.relu_core
    gate, alpha = groups[f"prompter.{name}.gate"], groups[f"prompter.{name}.alpha"]
    assert gate["lr"] == pytest.approx(1e-3)
    assert {id(p) for p in gate["params"]} == {id(p) for p in core.gate_affine.parameters()}
    assert alpha["lr"] == pytest.approx(5e-2)
    assert alpha["params"] == [prompter.alpha]
    assert groups[f"prompter.{name}"]["lr"] == pytest.approx(1e-2)


# ---------------------------------------------------------------------------------------------
# LoRSP v1.
# ---------------------------------------------------------------------------------------------


def _lorsp(**fields):
    return create_prompter("lorsp_v1", SIZE, **fields)


def test_spiking_core_has_the_attributes_the_exporter_reads():
    prompter = _lorsp(factors=3, rank=2, descriptor_pool=4, steps=5)
    core = prompter.spiking_core
    assert isinstance(core, LoRSPSpikingCore)
    assert isinstance(core.gate_affine, torch.nn.Linear)
    assert (core.gate_affine.in_features, core.gate_affine.out_features) == (48, 3)
    assert core.factor_weight().shape == (2 * 3 * SIZE * SIZE, 3)
    assert core.beta_on.shape == core.beta_off.shape == (3,)
    assert core.pixel_scale().shape == (2 * 3 * SIZE * SIZE,)
    assert (core.steps, core.dt) == (5, 1e-3)
    x = _images(2)
    seq = prompter.descriptor_sequence(x)
    assert seq.shape == (5, 2, 48)
    assert torch.equal(seq[0], seq[-1])  # the descriptor is presented at every step
    gates, on, off = core(seq, x)
    assert gates.shape == (5, 2, 3)
    assert on.shape == off.shape == (5, 2, 3, SIZE, SIZE)
    for spikes in (gates, on, off):
        assert set(spikes.unique().tolist()) <= {0.0, 1.0}


def test_factor_weight_columns_are_relu_of_plus_and_minus_factors_on_then_off():
    core = _lorsp(factors=2).spiking_core
    factors = core.factors()
    weight = core.factor_weight()
    half = 3 * SIZE * SIZE
    for k in range(2):
        assert torch.equal(weight[:half, k], torch.relu(factors[k]).flatten())
        assert torch.equal(weight[half:, k], torch.relu(-factors[k]).flatten())
    assert torch.equal(weight, polarity_factor_weight(factors))


def _reference_run(core, descriptor_seq, image, cell, tau_syn_inv):
    """DESIGN.md §2 equations, stepped by hand on the core's own weights."""
    dt, tau_mem_inv = core.dt, 500.0

    def step(x, v, i, v_th):
        i_new = i + x if cell == "LIFCell" else x
        v = v + dt * tau_mem_inv * (0.0 - v + i_new)
        i = (1 - dt * tau_syn_inv) * i_new
        z = (v > v_th).float()
        return z, (1 - z) * v, i

    weight, scale = core.factor_weight(), core.pixel_scale()
    image_current = scale * torch.cat([image.flatten(1)] * 2, dim=1)
    vg = ig = vp = ip = 0.0
    gates, pixels = [], []
    for d in descriptor_seq:
        g, vg, ig = step(core.gate_affine(d), vg, ig, 1.0)
        s, vp, ip = step(g @ weight.t() + image_current, vp, ip, 1.0)
        gates.append(g)
        pixels.append(s)
    return torch.stack(gates), torch.stack(pixels)


@pytest.mark.parametrize("cell", ["LIFCell", "LIFBoxCell"])
def test_spiking_core_is_literally_affine_lif_linear_lif_plus_scale(cell):
    torch.manual_seed(3)
    prompter = _lorsp(cell=cell, tau_syn_inv=200.0, steps=10, factors=3)
    x = _images(3)
    seq = prompter.descriptor_sequence(x)
    with torch.no_grad():
        gates, on, off = prompter.spiking_core(seq, x)
        ref_gates, ref_pixels = _reference_run(prompter.spiking_core, seq, x, cell, 200.0)
    assert 0 < gates.mean() < 1 and 0 < on.mean() < 1
    assert torch.equal(gates, ref_gates)
    assert torch.equal(torch.cat([on, off], dim=2).flatten(2), ref_pixels)


def test_lif_and_lifbox_cells_have_different_dynamics_when_currents_persist():
    x = _images(3)
    runs = []
    for cell in ("LIFCell", "LIFBoxCell"):
        torch.manual_seed(0)
        prompter = _lorsp(cell=cell, tau_syn_inv=100.0)
        runs.append(prompter.spiking_core(prompter.descriptor_sequence(x), x))
    assert not torch.equal(runs[0][1], runs[1][1])


def test_prompt_is_exactly_zero_where_no_pixel_neuron_fired():
    prompter = _lorsp()
    with torch.no_grad():
        prompter.alpha.fill_(0.7)
    x = _images(4)
    _gates, on, off = prompter.spiking_core(prompter.descriptor_sequence(x), x)
    prompt = prompter(x).prompt
    silent = (on.sum(0) + off.sum(0)) == 0
    assert 0.05 < silent.float().mean() < 0.999  # sparse, but not empty
    assert torch.all(prompt[silent] == 0)
    assert torch.all(prompt[(on.sum(0) - off.sum(0)) != 0] != 0)
    assert torch.allclose(prompt, prompter.prompt_from_spikes(on, off))


def test_prompt_is_zero_at_init_and_alpha_gets_a_gradient():
    prompter = _lorsp()
    x = _images(4)
    out = prompter(x)
    assert torch.all(out.prompt == 0)
    assert torch.equal(out.prompted, x)
    _loss(out, _images(4)).backward()
    assert prompter.alpha.grad.abs().min() > 0


def test_prompt_gradients_reach_every_parameter_once_alpha_is_nonzero():
    """What the zero-alpha start buys: B, A, gate and betas all learn through the surrogate."""
    prompter = _lorsp()
    with torch.no_grad():
        prompter.alpha.fill_(0.1)
    x = _images(4)
    out = prompter(x)
    (out.prompted - _images(4)).square().mean().backward()  # task loss only, no regulariser
    for pname, param in prompter.named_parameters():
        assert param.grad.abs().sum() > 0, pname


def test_zero_initialised_factors_collapse_the_gradient_as_design_md_warns():
    """Negative control for the test above: LoR-VP's zero B makes every factor gradient zero."""
    prompter = _lorsp()
    with torch.no_grad():
        prompter.alpha.fill_(0.1)
        prompter.spiking_core.factor_left.zero_()
    out = prompter(_images(4))
    (out.prompted - _images(4)).square().mean().backward()
    core = prompter.spiking_core
    assert core.factor_left.grad.abs().sum() == 0
    assert core.factor_right.grad.abs().sum() == 0
    assert core.gate_affine.weight.grad.abs().sum() == 0


def test_images_of_the_same_class_get_different_prompts():
    """Two foolbox ImageNet samples of class 609 (jeep)."""
    x = torch.stack(
        [_foolbox_imagenet(f, SIZE) for f in ("imagenet_06_609.jpg", "imagenet_07_609.jpg")]
    )
    prompter = _lorsp()
    with torch.no_grad():
        prompter.alpha.fill_(1.0)
    prompt = prompter(x).prompt
    assert not torch.equal(prompt[0], prompt[1])


def test_pixel_synapse_makes_prompts_differ_even_when_the_gates_agree():
    """With identical gate spikes (gate weights zeroed) only the one-to-one image synapse differs."""
    prompter = _lorsp()
    with torch.no_grad():
        prompter.alpha.fill_(1.0)
        prompter.spiking_core.gate_affine.weight.zero_()
    x = _images(2)
    gates, on, off = prompter.spiking_core(prompter.descriptor_sequence(x), x)
    assert torch.equal(gates[:, 0], gates[:, 1])
    prompt = prompter.prompt_from_spikes(on, off)
    assert not torch.equal(prompt[0], prompt[1])
    with torch.no_grad():
        prompter.spiking_core.beta_on.zero_()
        prompter.spiking_core.beta_off.zero_()
    prompt = prompter(x).prompt
    assert torch.equal(prompt[0], prompt[1])  # without the synapse: one shared pattern


def test_factor_drive_has_rank_at_most_k_times_r_per_channel():
    factors, rank, size = 2, 2, 32
    prompter = create_prompter("lorsp_v1", size, factors=factors, rank=rank)
    core = prompter.spiking_core
    f = core.factors().detach()
    for gates in (torch.ones(factors), torch.tensor([1.0, 0.0]), torch.rand(factors)):
        drive = torch.einsum("k,kchw->chw", gates, f)
        for channel in range(3):
            assert torch.linalg.matrix_rank(drive[channel]) <= factors * rank
    assert torch.linalg.matrix_rank(torch.einsum("kchw->chw", f)[0]) == factors * rank
    for k in range(factors):
        assert torch.linalg.matrix_rank(f[k, 0]) == rank


def test_rate_regulariser_revives_a_silent_gate():
    prompter = _lorsp(factors=2, gate_rate_band=(0.1, 0.6), pixel_rate_band=None)
    with torch.no_grad():
        prompter.spiking_core.gate_affine.bias.fill_(-20.0)
    out = prompter(_images(4))
    assert out.stats["gate_rate"] == 0
    assert out.stats["reg_loss"].item() == pytest.approx(0.1**2)
    out.stats["reg_loss"].backward()
    assert torch.all(prompter.spiking_core.gate_affine.bias.grad < 0)  # descent raises the bias


def test_rate_regulariser_is_zero_inside_the_band_and_weighted():
    x = _images(2)
    prompter = _lorsp(gate_rate_band=(0.0, 1.0), pixel_rate_band=(0.0, 1.0))
    assert prompter(x).stats["reg_loss"] == 0
    prompter = _lorsp(gate_rate_band=(1.0, 1.0), pixel_rate_band=(0.0, 0.0), rate_reg_weight=2.0)
    gates, on, off = prompter.spiking_core(prompter.descriptor_sequence(x), x)
    gate_term = (1.0 - gates.mean(dim=(0, 1))).square().mean()
    pixel_term = (0.5 * (on.mean() + off.mean())).square()
    expected = 2.0 * (gate_term + pixel_term)
    assert expected > 0
    assert prompter(x).stats["reg_loss"].item() == pytest.approx(expected.item())


def test_lorsp_stats_are_the_firing_rates():
    prompter = _lorsp()
    x = _images(3)
    out = prompter(x)
    gates, on, off = prompter.spiking_core(prompter.descriptor_sequence(x), x)
    assert out.stats["gate_rate"] == pytest.approx(gates.mean().item())
    assert out.stats["pixel_rate"] == pytest.approx(torch.cat([on, off]).mean().item())
    assert 0 < out.stats["pixel_rate"] < 0.5


# ---------------------------------------------------------------------------------------------
# The ANN twin.
# ---------------------------------------------------------------------------------------------


def test_ann_twin_shares_the_synapse_layout_and_is_sparse():
    ann = create_prompter("lorsp_v1_ann", SIZE)
    lif = _lorsp()
    assert {n for n, _ in ann.relu_core.named_parameters()} == {
        n for n, _ in lif.spiking_core.named_parameters()
    }
    with torch.no_grad():
        ann.alpha.fill_(1.0)
    x = _images(2)
    _gates, on, off = ann.relu_core(ann.descriptor(x), x)
    prompt = ann(x).prompt
    assert torch.all(prompt[(on == 0) & (off == 0)] == 0)
    assert 0 < (prompt == 0).float().mean() < 1


def test_ann_twin_mac_count():
    ann = create_prompter("lorsp_v1_ann", (32, 48), factors=3, descriptor_pool=4)
    pixels = 3 * 32 * 48
    assert ann.mac_count() == {
        "descriptor_pool": pixels,
        "gate_affine": 48 * 3,
        "factor_linear": 2 * pixels * 3,
        "pixel_scale": 2 * pixels,
        "prompt_combine": pixels,
    }
