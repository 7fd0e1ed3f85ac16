"""RST Explorer: find, study and attack Robust Scratch Tickets (Fu et al., NeurIPS 2021).

The public API, on one screen:

    spec  = NetworkSpec("fmnist_conv4", dataset="fashion_mnist", seed=0)   # the random network
    model = build_network(spec, device="cpu")                              # weights from the seed
    cs    = load_tickets("pretrained_masks/.../tickets.rst.safetensors")   # candidate set of tickets
    ticket_model = cs.model(0)                                             # a ticket, eval mode

The layers, lowest first; a subpackage imports only from those above it in this list
(tests/test_import_graph.py checks it):

    rst.runtime      running things: atomic files, locks, progress, provenance, devices, workers, config checks
    rst.data         datasets in [0, 1] pixels, splits, augmentation, the device-side loader
    rst.network      masked layers, the seeded random networks, weights, the mask file format
    rst.evaluation   attacks, accuracy, per-image errors, R2S and its switch probabilities, comparisons, reports
    rst.search       the mask search loop, its inner attacks, selection, boosting, baselines, multi-GPU
    rst.zoo          building and evaluating ticket zoos, the study across random networks
    rst.cli          ``python -m rst``
    rst.bench        ``python -m rst.bench``

The module names of earlier releases (``rst.masks``, ``rst.inner``, ...) still import: see
:mod:`rst.flat_names`.
"""
from . import flat_names
from .evaluation.metrics import sparsity_curve, transfer_matrix
from .evaluation.protocols import evaluate_r2s
from .evaluation.r2s import R2S
from .network.masked import MaskedConv2d, MaskedLinear, cached_masks, layer_stats, masked_layers, set_keep_ratio
from .network.masks import (CandidateSet, MaskFileError, Ticket, apply_ticket, extract_ticket, load_tickets,
                            save_tickets, to_dense)
from .network.models import NetworkSpec, build_network, create_model, list_models
from .network.weights import weight_checksum
from .runtime.provenance import __version__

flat_names.install()

__all__ = [
    "MaskedConv2d", "MaskedLinear", "cached_masks", "layer_stats", "masked_layers", "set_keep_ratio",
    "NetworkSpec", "build_network", "create_model", "list_models",
    "CandidateSet", "MaskFileError", "Ticket", "apply_ticket", "extract_ticket", "load_tickets",
    "save_tickets", "to_dense", "weight_checksum", "__version__",
    "R2S", "evaluate_r2s", "sparsity_curve", "transfer_matrix",
]


def __getattr__(name: str):
    return flat_names.resolve(name)
