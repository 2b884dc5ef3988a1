"""Prompters: registry and configs, DESIGN.md parameter counts, LoRSP v2 and pruned LoR-VP.

Tests that loop over prompters are parametrized over the registry, so a newly registered prompter
is tested without anyone remembering to (and fails until its parameter formula is added here).
"""

from __future__ import annotations

import json

import prompter_inputs as _inputs  # tests/ is on pytest's pythonpath
import pytest
import torch

from lorsp_neuro.config_checks import ConfigError
from lorsp_neuro.errors import LorspError
from lorsp_neuro.prompters import (
    LoRSPSpikingCore,
    PromptOutput,
    create_prompter,
    list_prompters,
    magnitude_mask,
    prompter_class,
    rank_one_gate_weight,
)

SIZE = _inputs.SIZE
_images, _foolbox_imagenet, _loss = _inputs.images, _inputs.foolbox_imagenet, _inputs.loss


def _descriptor_dim(config) -> int:
    return 3 * config.descriptor_pool**2


def _v1_count(h, w, c) -> int:
    return c.factors * 3 * c.rank * (h + w) + _descriptor_dim(c) * c.factors + c.factors + 9


def _v2_count(h, w, c) -> int:
    """``3·r·(H+W)`` (V) + ``(3p²+1)·r`` (gate) + ``r`` (λ) + 3 (γ) + 3 (θ, unless controlled)."""
    theta = 3 if getattr(c, "target_sparsity", None) is None else 0
    return 3 * c.rank * (h + w) + (_descriptor_dim(c) + 1) * c.rank + c.rank + 3 + theta


#: DESIGN.md §1 tunable-parameter formulas for an H×W image, per registered prompter.
PARAMETER_FORMULAS = {
    "linear_probe": lambda h, w, c: 0,
    "full_dense": lambda h, w, c: 3 * h * w,
    "vp_pad": lambda h, w, c: 3 * (h * w - (h - 2 * c.pad_width) * (w - 2 * c.pad_width)),
    "lor_vp": lambda h, w, c: 3 * c.rank * (h + w),
    "lor_vp_pruned": lambda h, w, c: 3 * c.rank * (h + w),
    "lorsp_ann": _v2_count,
    "lorsp": _v2_count,
    "lorsp_v1_ann": _v1_count,
    "lorsp_v1": _v1_count,
}


# ---------------------------------------------------------------------------------------------
# Registry and configs.
# ---------------------------------------------------------------------------------------------


def test_registry_lists_the_prompters_of_design_md():
    assert set(list_prompters()) >= {
        "lorsp",
        "lorsp_ann",
        "lorsp_v1",
        "lorsp_v1_ann",
        "lor_vp",
        "lor_vp_pruned",
        "vp_pad",
        "full_dense",
        "linear_probe",
    }


def test_unknown_prompter_name_lists_the_known_ones():
    with pytest.raises(LorspError, match=r"unknown prompter 'lorps'.*lor_vp.*lorsp"):
        create_prompter("lorps", 32)


def test_unknown_config_field_is_named():
    with pytest.raises(ConfigError, match=r"unknown config field\(s\) \['rnk'\]"):
        create_prompter("lor_vp", 32, rnk=4)


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("lorsp", "rank", 0),
        ("lorsp", "rank", 1.5),
        ("lorsp", "steps", 0),
        ("lorsp", "descriptor_pool", True),
        ("lorsp", "grid", 0),
        ("lorsp", "persistent", "yes"),
        ("lorsp", "dt", 0.0),
        ("lorsp", "dt", 0.01),  # dt·tau_mem_inv = 5: unstable Euler step
        ("lorsp", "tau_mem_inv", float("nan")),
        ("lorsp", "gate_threshold", -1.0),
        ("lorsp", "gate_rate_band", (0.6, 0.1)),
        ("lorsp", "pixel_rate_band", (0.1, 2.0)),
        ("lorsp", "gate_rate_band", "high"),
        ("lorsp", "rate_reg_weight", -1.0),
        ("lorsp", "gate_lr_scale", 0.0),
        ("lorsp", "target_sparsity", 1.0),
        ("lorsp", "target_sparsity", 0.0),
        ("lorsp", "controller_gain", 0.0),
        ("lorsp_ann", "a_init_std", 0.0),
        ("lorsp_ann", "pixel_bias_init", float("inf")),
        ("lor_vp_pruned", "target_sparsity", 1.0),
        ("lor_vp_pruned", "prune_at", 1.5),
        ("lor_vp", "rank", 0),
        ("lor_vp", "a_init_std", -0.01),
        ("vp_pad", "pad_width", 0),
        ("full_dense", "init_std", -1.0),
    ],
)
def test_bad_config_value_raises_config_error_naming_the_field(name, field, value):
    with pytest.raises(ConfigError, match=field):
        create_prompter(name, 32, **{field: value})


def test_config_error_is_a_value_error_and_a_lorsp_error():
    with pytest.raises(ConfigError) as caught:
        create_prompter("lor_vp", 32, rank=-2)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, LorspError)


def test_pad_wider_than_half_the_image_is_rejected():
    with pytest.raises(ConfigError, match="pad_width=8 leaves no image"):
        create_prompter("vp_pad", 16, pad_width=8)


@pytest.mark.parametrize("size", [0, (16,), "16", (16, -1)])
def test_bad_image_size_is_rejected(size):
    with pytest.raises(ConfigError, match="image_size"):
        create_prompter("full_dense", size)


@pytest.mark.parametrize("name", list_prompters())
def test_config_round_trips_through_json(name):
    prompter = create_prompter(name, SIZE)
    fields = json.loads(json.dumps(prompter.config_dict()))
    assert create_prompter(name, SIZE, **fields).config == prompter.config


@pytest.mark.parametrize("name", list_prompters())
def test_wrong_input_shape_names_the_expected_shape(name):
    prompter = create_prompter(name, SIZE)
    with pytest.raises(LorspError, match=rf"expected images of shape \(B, 3, {SIZE}, {SIZE}\)"):
        prompter(torch.rand(1, 3, SIZE + 1, SIZE))


# ---------------------------------------------------------------------------------------------
# Parameter counts.
# ---------------------------------------------------------------------------------------------


def test_every_registered_prompter_has_a_design_formula():
    assert set(PARAMETER_FORMULAS) == set(list_prompters())


@pytest.mark.parametrize(
    ("name", "fields", "expected"),
    [
        ("linear_probe", {}, 0),
        ("vp_pad", {}, 69_840),
        ("full_dense", {}, 150_528),
        ("lor_vp", {"rank": 4}, 5_376),
        ("lor_vp_pruned", {"rank": 4}, 5_376),
        ("lorsp", {}, 5_438),  # DESIGN.md §1: 1344·4 + 13·4 + 4 + 6
        ("lorsp_ann", {}, 5_438),
        ("lorsp", {"grid": 8}, 5_438),  # the grid changes neurons, not parameters
        ("lorsp", {"target_sparsity": 0.9}, 5_435),  # θ is the controller's, not the optimizer's
        ("lorsp", {"rank": 2, "descriptor_pool": 4}, 1344 * 2 + 49 * 2 + 2 + 6),
    ],
)
def test_parameter_counts_at_224_match_design_md(name, fields, expected):
    assert create_prompter(name, 224, **fields).num_tunable_parameters() == expected


def test_lorsp_has_at_most_1_1_times_lor_vp_parameters_at_32_and_224():
    for size in (32, 224):
        lorsp = create_prompter("lorsp", size).num_tunable_parameters()
        lor_vp = create_prompter("lor_vp", size).num_tunable_parameters()
        assert lorsp <= 1.1 * lor_vp, (size, lorsp, lor_vp)
    assert create_prompter("lorsp", 32).num_tunable_parameters() == 830  # DESIGN.md §1


@pytest.mark.parametrize("name", list_prompters())
@pytest.mark.parametrize("size", [(32, 48), (64, 64)])
def test_parameter_count_matches_formula_at_other_sizes(name, size):
    prompter = create_prompter(name, size)
    config = prompter.config
    if name == "vp_pad":
        config = type(config)(pad_width=prompter.pad_width)
    assert prompter.num_tunable_parameters() == PARAMETER_FORMULAS[name](*size, config)


def test_vp_pad_width_scales_with_image_size():
    assert create_prompter("vp_pad", 224).pad_width == 30
    assert create_prompter("vp_pad", 64).pad_width == 9
    assert create_prompter("vp_pad", 64, pad_width=4).pad_width == 4


# ---------------------------------------------------------------------------------------------
# Every prompter: the output contract and gradient flow.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list_prompters())
def test_output_contract(name):
    prompter = create_prompter(name, SIZE)
    x = _images()
    out = prompter(x)
    assert isinstance(out, PromptOutput)
    if out.prompt is None:
        assert name == "linear_probe"
        assert torch.equal(out.prompted, x)
    else:
        assert out.prompt.shape == x.shape
        assert torch.allclose(out.prompted, x + out.prompt)
    for value in out.stats.values():
        assert value.dim() == 0


@pytest.mark.parametrize("name", [n for n in list_prompters() if n != "linear_probe"])
def test_every_parameter_learns_within_two_steps(name):
    """Step 1 moves the parameters that start the prompt at zero (alpha, B); step 2 reaches all."""
    torch.manual_seed(1)
    prompter = create_prompter(name, SIZE)
    x, target = _images(4), _images(4)
    optimizer = torch.optim.SGD(prompter.parameters(), lr=1.0)
    for _ in range(2):
        optimizer.zero_grad()
        _loss(prompter(x), target).backward()
        optimizer.step()
    for pname, param in prompter.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", list_prompters())
def test_param_groups_cover_each_tunable_parameter_once(name):
    prompter = create_prompter(name, SIZE)
    groups = prompter.param_groups(1e-2)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in prompter.parameters() if p.requires_grad}


# ---------------------------------------------------------------------------------------------
# LoRSP v2: value readout.
# ---------------------------------------------------------------------------------------------


def _lorsp(size: int = SIZE, **fields):
    return create_prompter("lorsp", size, **fields)


def _randomise(prompter, seed: int = 0):
    """Non-zero B (LoR-VP's B starts at zero) so that V and the gate synapses are not zero."""
    torch.manual_seed(seed)
    core = prompter.spiking_core if hasattr(prompter, "spiking_core") else prompter.relu_core
    with torch.no_grad():
        core.value_left.normal_(0.0, 0.3)
        core.value_right.normal_(0.0, 0.3)
    return prompter


def test_lorsp_gate_gets_its_own_learning_rate():
    for name in ("lorsp", "lorsp_ann"):
        prompter = create_prompter(name, SIZE, gate_lr_scale=0.1)
        groups = {g["name"]: g for g in prompter.param_groups(1e-2)}
        core = prompter.spiking_core if name == "lorsp" else prompter.relu_core
        gate = groups[f"prompter.{name}.gate"]
        assert gate["lr"] == pytest.approx(1e-3)
        assert {id(p) for p in gate["params"]} == {
            id(core.gate_affine.weight),
            id(core.gate_bias),
        }
        assert groups[f"prompter.{name}"]["lr"] == pytest.approx(1e-2)


def test_spiking_core_shapes_and_attributes_the_exporter_reads():
    prompter = _lorsp(rank=3, descriptor_pool=4, steps=5)
    core = prompter.spiking_core
    assert isinstance(core, LoRSPSpikingCore)
    assert (core.gate_affine.in_features, core.gate_affine.out_features) == (48, 3)
    assert core.gate_affine.bias is None  # the gate bias comes from the constant-1 input
    assert core.gate_weight().shape == (3 * SIZE * SIZE, 3)
    assert core.image_scale().shape == (3 * SIZE * SIZE,)
    assert core.pixel_bias_weight().shape == (3 * SIZE * SIZE, 1)
    assert core.gate_bias_weight().shape == (3, 1)
    assert (core.steps, core.dt, core.persistent) == (5, 1e-3, True)
    assert core.pixel_neurons.p.tau_syn_inv == 0  # the current never decays
    record = prompter.run_core(_images(2))
    assert record.gates.shape == (5, 2, 3)
    assert record.pixels.shape == (5, 2, 3, SIZE, SIZE)
    for spikes in (record.gates, record.pixels):
        assert set(spikes.unique().tolist()) <= {0.0, 1.0}


def _hand_run(prompter, x):
    """DESIGN.md §1-2 stepped by hand: CubaLIF cells, inputs at step 0 only when persistent."""
    core, config = prompter.spiking_core, prompter.config
    dv = config.dt * config.tau_mem_inv
    keep = 1.0 if config.persistent else 0.0  # 1 − dt·tau_syn_inv
    d = torch.nn.functional.adaptive_avg_pool2d(x, config.descriptor_pool).flatten(1) - 0.5
    gate_in = d @ core.gate_affine.weight.t() + core.gate_bias
    gamma = core.image_gain.repeat_interleave(SIZE * SIZE)
    theta = core.pixel_bias.repeat_interleave(SIZE * SIZE)
    pixel_in = gamma * (x.flatten(1) - 0.5) + theta
    left, right, lam = core.value_left, core.value_right, core.gate_scale
    weight = torch.stack(
        [
            (
                lam[k] * left[:, :, k].abs().unsqueeze(2) * right[:, k, :].abs().unsqueeze(1)
            ).flatten()
            for k in range(config.rank)
        ],
        dim=1,
    )
    vg = ig = vp = ip = 0.0
    gates, pixels = [], []
    for t in range(config.steps):
        shown = t == 0 or not config.persistent
        ig = keep * ig + (gate_in if shown else 0.0)
        vg = vg + dv * (ig - vg)
        g = (vg > config.gate_threshold).to(vg.dtype)
        vg = (1 - g) * vg
        ip = keep * ip + g @ weight.t() + (pixel_in if shown else 0.0)
        vp = vp + dv * (ip - vp)
        s = (vp > config.pixel_threshold).to(vp.dtype)
        vp = (1 - s) * vp
        gates.append(g)
        pixels.append(s)
    return torch.stack(gates), torch.stack(pixels)


@pytest.mark.parametrize("persistent", [True, False])
def test_spiking_core_follows_the_design_equations(persistent):
    prompter = _randomise(_lorsp(steps=6, persistent=persistent), seed=3)
    x = _images(3).double()
    prompter = prompter.double()
    with torch.no_grad():
        record = prompter.run_core(x)
        gates, pixels = _hand_run(prompter, x)
    assert 0 < record.gates.mean() < 1 and 0 < record.pixels.mean() < 1
    assert torch.equal(record.gates, gates)
    assert torch.equal(record.pixels.flatten(2), pixels)


def test_persistent_and_per_step_inputs_differ():
    x = _images(3)
    persistent = _randomise(_lorsp(steps=6)).run_core(x).pixels
    every_step = _randomise(_lorsp(steps=6, persistent=False)).run_core(x).pixels
    assert not torch.equal(persistent, every_step)


def test_gate_synapse_column_k_is_v_s_own_rank_one_component():
    prompter = _randomise(_lorsp(32, rank=3))
    core = prompter.spiking_core
    weight = core.gate_weight().detach()
    for k in range(3):
        column = weight[:, k].view(3, 32, 32)
        expected = core.gate_scale[k] * torch.einsum(
            "ch,cw->chw", core.value_left[:, :, k].abs(), core.value_right[:, k, :].abs()
        )
        assert torch.allclose(column, expected.detach())
        for channel in range(3):
            assert torch.linalg.matrix_rank(column[channel]) == 1
    values = core.values().detach()
    for channel in range(3):
        assert torch.linalg.matrix_rank(values[channel]) <= 3


def test_prompt_is_values_times_rate_and_exactly_zero_where_silent():
    prompter = _randomise(_lorsp(pixel_bias_init=0.0))
    x = _images(4)
    out = prompter(x)
    rates = prompter.run_core(x).pixels.mean(0)
    assert torch.equal(out.prompt, prompter.spiking_core.values() * rates)
    silent = rates == 0
    assert 0.01 < silent.float().mean() < 0.99
    assert torch.all(out.prompt[silent] == 0)
    assert out.stats["silent_fraction"] == pytest.approx(silent.float().mean().item())


def test_prompt_is_lor_vp_s_when_every_neuron_fires_at_every_step():
    prompter = _randomise(_lorsp())
    with torch.no_grad():
        prompter.spiking_core.pixel_bias.fill_(100.0)
    out = prompter(_images(2))
    values = prompter.spiking_core.values()
    assert torch.equal(out.prompt, values.expand_as(out.prompt))


def test_prompt_is_zero_at_init_like_lor_vp_and_b_learns_first():
    prompter = _lorsp()
    x = _images(4)
    out = prompter(x)
    assert torch.all(out.prompt == 0)
    (out.prompted - _images(4)).square().mean().backward()
    assert prompter.spiking_core.value_left.grad.abs().sum() > 0


def test_images_of_the_same_class_get_different_prompts():
    """Two foolbox ImageNet samples of class 609 (jeep)."""
    x = torch.stack(
        [_foolbox_imagenet(f, SIZE) for f in ("imagenet_06_609.jpg", "imagenet_07_609.jpg")]
    )
    prompt = _randomise(_lorsp())(x).prompt
    assert not torch.equal(prompt[0], prompt[1])


def test_image_synapse_makes_prompts_differ_even_when_the_gates_agree():
    prompter = _randomise(_lorsp())
    with torch.no_grad():
        prompter.spiking_core.gate_affine.weight.zero_()
    x = _images(2)
    record = prompter.run_core(x)
    assert torch.equal(record.gates[:, 0], record.gates[:, 1])
    prompt = prompter(x).prompt
    assert not torch.equal(prompt[0], prompt[1])
    with torch.no_grad():
        prompter.spiking_core.image_gain.zero_()
    prompt = prompter(x).prompt
    assert torch.equal(prompt[0], prompt[1])  # without the synapse: one shared pattern


def test_grid_neurons_drive_their_cells():
    prompter = _randomise(_lorsp(grid=4))
    core = prompter.spiking_core
    assert core.neuron_shape == (3, 4, 4) and core.num_pixel_neurons == 48
    assert core.gate_weight().shape == (48, 4)
    x = _images(2)
    record = prompter.run_core(x)
    assert record.pixels.shape == (4, 2, 3, 4, 4)
    prompt = prompter(x).prompt
    rates = record.pixels.mean(0).repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
    assert torch.equal(prompt, core.values() * rates)
    pooled = rank_one_gate_weight(core.value_left, core.value_right, core.gate_scale, None)
    pooled = torch.nn.functional.avg_pool2d(pooled.t().reshape(4, 3, SIZE, SIZE), 4)
    assert torch.allclose(core.gate_weight().t().reshape(4, 3, 4, 4), pooled)


def test_grid_must_divide_the_image():
    with pytest.raises(ConfigError, match="grid=5 must divide"):
        _lorsp(grid=5)


def test_rate_regulariser_revives_a_silent_gate():
    prompter = _lorsp(gate_rate_band=(0.1, 0.6), pixel_rate_band=None)
    with torch.no_grad():
        prompter.spiking_core.gate_bias.fill_(-20.0)
    out = prompter(_images(4))
    assert out.stats["gate_rate"] == 0
    assert out.stats["reg_loss"].item() == pytest.approx(0.1**2)
    out.stats["reg_loss"].backward()
    assert torch.all(prompter.spiking_core.gate_bias.grad < 0)  # descent raises the bias


def test_sparsity_controller_reaches_its_target_and_moves_only_theta():
    """The θ controller alone (no optimizer) drives the silent fraction to s* on random images."""
    torch.manual_seed(0)
    prompter = _randomise(_lorsp(32, target_sparsity=0.8)).train()
    assert "spiking_core.pixel_bias" in dict(prompter.named_buffers())
    before = {n: p.detach().clone() for n, p in prompter.named_parameters()}
    theta0 = prompter.spiking_core.pixel_bias.clone()
    for step in range(150):
        prompter(_images(16, 32))
        prompter.after_optimizer_step(step + 1, 150)
    assert torch.all(prompter.spiking_core.pixel_bias < theta0)  # more silence: less bias
    for name, param in prompter.named_parameters():
        assert torch.equal(param, before[name]), name
    prompter.eval()
    silent = prompter(_images(64, 32)).stats["silent_fraction"].item()
    assert silent == pytest.approx(0.8, abs=0.05)


def test_controller_sits_out_evaluation_and_runs_without_a_target():
    prompter = _randomise(_lorsp(target_sparsity=0.5)).eval()
    theta = prompter.spiking_core.pixel_bias.clone()
    prompter(_images(4))
    prompter.after_optimizer_step(1, 10)  # no training batch seen: nothing to act on
    assert torch.equal(prompter.spiking_core.pixel_bias, theta)
    natural = _lorsp().train()
    natural(_images(4))
    natural.after_optimizer_step(1, 10)
    assert isinstance(natural.spiking_core.pixel_bias, torch.nn.Parameter)


# ---------------------------------------------------------------------------------------------
# The ANN twin.
# ---------------------------------------------------------------------------------------------


def test_ann_twin_shares_the_synapses_and_is_sparse():
    ann = _randomise(create_prompter("lorsp_ann", SIZE, pixel_bias_init=0.0))
    lif = _lorsp()
    assert {n for n, _ in ann.relu_core.named_parameters()} == {
        n for n, _ in lif.spiking_core.named_parameters()
    }
    x = _images(2)
    _gates, rates = ann.relu_core(ann.descriptor(x), x)
    assert rates.min() >= 0 and rates.max() <= 1
    prompt = ann(x).prompt
    assert torch.equal(prompt, ann.relu_core.values() * rates)
    assert 0 < (prompt == 0).float().mean() < 1


def test_ann_twin_mac_count():
    ann = create_prompter("lorsp_ann", (32, 48), rank=3, descriptor_pool=4)
    pixels = 3 * 32 * 48
    assert ann.mac_count() == {
        "descriptor_pool": pixels,
        "gate_affine": 49 * 3,
        "gate_synapses": pixels * 3,
        "image_gain": pixels,
        "pixel_bias": pixels,
        "value_readout": pixels,
    }
    grid = create_prompter("lorsp_ann", 32, grid=8).mac_count()
    assert grid["gate_synapses"] == 3 * 64 * 4 and grid["descriptor_pool"] == 2 * 3 * 32 * 32


# ---------------------------------------------------------------------------------------------
# Pruned LoR-VP.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.95])
def test_magnitude_mask_zeroes_exactly_the_smallest_entries(sparsity):
    prompt = torch.randn(3, 8, 8)
    mask = magnitude_mask(prompt, sparsity)
    assert int((mask == 0).sum()) == round(sparsity * prompt.numel())
    if sparsity > 0:
        assert prompt[mask == 0].abs().max() <= prompt[mask == 1].abs().min()
    assert int((magnitude_mask(torch.zeros(3, 8, 8), sparsity) == 0).sum()) == round(
        sparsity * 192
    )  # ties (the zero init) still give the exact sparsity


def test_pruned_lor_vp_is_sparse_at_any_time_and_fixes_its_mask_at_prune_at():
    torch.manual_seed(0)
    prompter = create_prompter("lor_vp_pruned", SIZE, target_sparsity=0.75, prune_at=0.5)
    with torch.no_grad():
        prompter.left.normal_()  # LoR-VP's zero B would make every entry zero
    optimizer = torch.optim.Adam(prompter.parameters(), lr=0.05)
    x, target = _images(4), _images(4)
    masks = []
    for step in range(1, 11):
        out = prompter(x)
        assert (out.prompt[0] == 0).float().mean() == pytest.approx(0.75, abs=0.01)
        optimizer.zero_grad()
        (out.prompted - target).square().mean().backward()
        optimizer.step()
        prompter.after_optimizer_step(step, 10)
        assert bool(prompter.mask_fixed) == (step >= 5)
        masks.append(prompter.mask.clone())
    assert all(torch.equal(masks[4], m) for m in masks[5:])
    state = prompter.state_dict()
    assert {"mask", "mask_fixed"} <= set(state)  # checkpointed with the run
    fresh = create_prompter("lor_vp_pruned", SIZE, target_sparsity=0.75)
    fresh.load_state_dict(state)
    assert torch.equal(fresh(x).prompt, prompter(x).prompt)


def test_prompter_class_lookup():
    assert prompter_class("lorsp").name == "lorsp"
    with pytest.raises(LorspError, match="known prompters"):
        prompter_class("nope")


def test_calibration_silences_exactly_the_target_fraction_with_the_weights_frozen():
    torch.manual_seed(4)
    prompter = _randomise(_lorsp(32, target_sparsity=0.7, pixel_bias_init=3.0))
    x = _images(24, 32)
    before = {n: p.detach().clone() for n, p in prompter.named_parameters()}
    assert prompter.eval()(x).stats["silent_fraction"] < 0.5  # far from the target
    prompter.calibrate(iter([x[:12], x[12:]]))
    silent = (prompter.run_core(x).pixels.amax(0) == 0).float().mean(dim=(0, 2, 3))
    assert silent == pytest.approx(torch.full((3,), 0.7), abs=1.5 / (24 * 32 * 32))
    for name, param in prompter.named_parameters():
        assert torch.equal(param, before[name]), name
    natural = _lorsp(32)
    bias = natural.spiking_core.pixel_bias.detach().clone()
    natural.calibrate(iter([x]))  # no target: nothing to calibrate
    assert torch.equal(natural.spiking_core.pixel_bias, bias)


def test_silence_margin_predicts_silence_after_a_bias_shift():
    from lorsp_neuro.prompters.lorsp import silence_margin

    prompter = _randomise(_lorsp(pixel_bias_init=0.5))
    x = _images(4)
    record = prompter.run_core(x, record_currents=True)
    margin = silence_margin(record.currents, 0.5, 1.0).view(4, 3, SIZE, SIZE)
    for shift in (-0.3, 0.0, 0.4):
        with torch.no_grad():
            prompter.spiking_core.pixel_bias.add_(shift)
        silent = prompter.run_core(x).pixels.amax(0) == 0
        with torch.no_grad():
            prompter.spiking_core.pixel_bias.sub_(shift)
        decided = (margin - shift).abs() > 1e-5  # away from the float rounding at the boundary
        assert torch.equal(silent[decided], (margin >= shift)[decided])


def test_controller_under_ddp_uses_the_global_batch_statistics(tmp_path):
    """The ranks' sums add up to the global batch's, and the reduced path (a process group of
    one) moves θ as one process does, up to float rounding."""
    import torch.distributed as dist

    prompter = _randomise(_lorsp(target_sparsity=0.6, pixel_bias_init=0.5)).train()
    x = _images(8)
    prompter(x)
    whole = prompter._silence
    halves = []
    for part in (x[:4], x[4:]):
        prompter(part)
        halves.append(prompter._silence[2])
    assert torch.allclose(halves[0] + halves[1], whole[2])
    theta = prompter.spiking_core.pixel_bias.clone()
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1
    )
    try:
        prompter._silence = whole
        prompter.after_optimizer_step(1, 10)
    finally:
        dist.destroy_process_group()
    reduced = prompter.spiking_core.pixel_bias.clone()
    prompter.spiking_core.pixel_bias.copy_(theta)
    prompter._silence = whole
    prompter.after_optimizer_step(1, 10)
    assert not torch.equal(reduced, theta)
    assert torch.allclose(reduced, prompter.spiking_core.pixel_bias, rtol=1e-5, atol=1e-6)
