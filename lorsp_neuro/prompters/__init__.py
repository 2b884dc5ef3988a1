"""Visual prompters: LoRSP (the spiking low-rank prompter), its ANN twin, v1 and the VP baselines.

A prompter maps a batch of images ``x`` (``(B, 3, H, W)`` in [0, 1], not yet normalized) to a
:class:`PromptOutput` with ``prompted = x + prompt``. Registered by name with a dataclass
``Config`` (:func:`create_prompter`, :func:`list_prompters`); one module per family:

==================  =======================================  ==========================================
name                prompt                                   tunable parameters (H×W image)
==================  =======================================  ==========================================
``linear_probe``    none                                     0
``vp_pad``          learnable border of width ``p``          3·(H·W − (H−2p)·(W−2p))
``full_dense``      one 3×H×W prompt                         3·H·W
``lor_vp``          ``bmm(B, A)`` per channel, rank r        3·r·(H+W)
``lor_vp_pruned``   LoR-VP, smallest-|P| entries zeroed      3·r·(H+W)
``lorsp``           ``V ⊙ ρ(x)``, v2 (DESIGN.md §1)          3·r·(H+W) + (3p²+1)·r + r + 6 (3: target)
``lorsp_ann``       v2 with clipped ReLUs (the ANN twin)     3·r·(H+W) + (3p²+1)·r + r + 6
``lorsp_v1``        ``alpha ⊙ (rate_on − rate_off)``, v1     K·3·r·(H+W) + D·K + K + 9
``lorsp_v1_ann``    v1 with ReLUs                            K·3·r·(H+W) + D·K + K + 9
==================  =======================================  ==========================================

At 224 px, ``3·(H+W) = 1344``: LoR-VP has ``1344·r``, LoRSP ``1344·r + (3p²+1)·r + r + 6``.
"""

from lorsp_neuro.prompters.base import (
    CHANNELS,
    DESCRIPTOR_CENTRE,
    Prompter,
    PromptOutput,
    create_prompter,
    descriptor_dim,
    list_prompters,
    low_rank_prompt,
    pooled_descriptor,
    prompter_class,
    register_prompter,
)
from lorsp_neuro.prompters.baselines import (
    FullDensePrompt,
    LoRVPPrompt,
    LoRVPPrunedPrompt,
    NoPrompt,
    PadPrompt,
    border_mask,
    default_pad_width,
    magnitude_mask,
)
from lorsp_neuro.prompters.lorsp import (
    LoRSPAnnPrompter,
    LoRSPConfig,
    LoRSPPrompter,
    LoRSPReLUCore,
    LoRSPSpikingCore,
    rank_one_gate_weight,
    value_readout,
)
from lorsp_neuro.prompters.lorsp_v1 import (
    LoRSPv1AnnPrompter,
    LoRSPv1Prompter,
    polarity_factor_weight,
    polarity_pixel_scale,
    spike_prompt,
)

__all__ = [
    "CHANNELS",
    "DESCRIPTOR_CENTRE",
    "FullDensePrompt",
    "LoRSPAnnPrompter",
    "LoRSPConfig",
    "LoRSPPrompter",
    "LoRSPReLUCore",
    "LoRSPSpikingCore",
    "LoRSPv1AnnPrompter",
    "LoRSPv1Prompter",
    "LoRVPPrompt",
    "LoRVPPrunedPrompt",
    "NoPrompt",
    "PadPrompt",
    "PromptOutput",
    "Prompter",
    "border_mask",
    "create_prompter",
    "default_pad_width",
    "descriptor_dim",
    "list_prompters",
    "low_rank_prompt",
    "magnitude_mask",
    "polarity_factor_weight",
    "polarity_pixel_scale",
    "pooled_descriptor",
    "prompter_class",
    "rank_one_gate_weight",
    "register_prompter",
    "spike_prompt",
    "value_readout",
]
