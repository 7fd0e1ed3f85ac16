"""RST Explorer: find, study and attack Robust Scratch Tickets (Fu et al., NeurIPS 2021).

The public API, on one screen:

    spec  = NetworkSpec("fmnist_conv4", dataset="fashion_mnist", seed=0)   # the random network
    model = build_network(spec, device="cpu")                              # weights from the seed
    cs    = load_tickets("pretrained_masks/.../tickets.rst.safetensors")   # candidate set of tickets
    ticket_model = cs.model(0)                                             # a ticket, eval mode
"""
from .masked import MaskedConv2d, MaskedLinear, cached_masks, layer_stats, masked_layers, set_keep_ratio
from .models import NetworkSpec, build_network, create_model, list_models
from .masks import (CandidateSet, MaskFileError, Ticket, apply_ticket, extract_ticket, load_tickets,
                    save_tickets, to_dense)
from .evaluate import sparsity_curve, transfer_matrix
from .provenance import __version__
from .r2s import R2S, evaluate_r2s
from .weights import weight_checksum

__all__ = [
    "MaskedConv2d", "MaskedLinear", "cached_masks", "layer_stats", "masked_layers", "set_keep_ratio",
    "NetworkSpec", "build_network", "create_model", "list_models",
    "CandidateSet", "MaskFileError", "Ticket", "apply_ticket", "extract_ticket", "load_tickets",
    "save_tickets", "to_dense", "weight_checksum", "__version__",
    "R2S", "evaluate_r2s", "sparsity_curve", "transfer_matrix",
]
