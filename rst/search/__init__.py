"""Layer 5, the search: its recipe (``config``), the mask search loop (``loop``, the paper's Algorithm 1),
the inner attacks behind one interface (``inner``, ``boosted_attack``) and their guard, model selection,
the batched search of several keep ratios, boosting, dense / fine-tune baselines (``train``) and
multi-GPU runs.

``rst.search.run_search``, ``rst.search.SearchConfig`` and the other names of the loop and the recipe
are re-exported here."""
from .config import LATER_FIELDS, PRESETS, SearchConfig, preset
from .loop import (Fit, FitResult, SearchData, SearchResult, adversarial_fit, finish_fit, prepare_models, resume_fit,
                   run_search, save_fit, score_parameters, search_data, start_fit, train_epoch, train_step,
                   validation_metrics)

__all__ = ["LATER_FIELDS", "PRESETS", "Fit", "FitResult", "SearchConfig", "SearchData", "SearchResult",
           "adversarial_fit", "finish_fit", "prepare_models", "preset", "resume_fit", "run_search", "save_fit",
           "score_parameters", "search_data", "start_fit", "train_epoch", "train_step", "validation_metrics"]
