"""Layer 5, the search: the mask search loop (``loop``, the paper's Algorithm 1), the inner attacks
behind one interface (``inner``, ``boosted_attack``) and their guard, model selection, the batched
search of several keep ratios, boosting, dense / fine-tune baselines (``train``) and multi-GPU runs.

``rst.search.run_search`` and the other names of the loop are re-exported here."""
from .loop import (LATER_FIELDS, PRESETS, Fit, FitResult, SearchConfig, SearchData, SearchResult, adversarial_fit,
                   finish_fit, prepare_models, preset, resume_fit, run_search, save_fit, score_parameters, search_data,
                   start_fit, train_epoch, train_step, validation_metrics)

__all__ = ["LATER_FIELDS", "PRESETS", "Fit", "FitResult", "SearchConfig", "SearchData", "SearchResult",
           "adversarial_fit", "finish_fit", "prepare_models", "preset", "resume_fit", "run_search", "save_fit",
           "score_parameters", "search_data", "start_fit", "train_epoch", "train_step", "validation_metrics"]
