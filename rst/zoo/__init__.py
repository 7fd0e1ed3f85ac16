"""Layer 6, the zoo: building and evaluating a set of tickets with its dense baseline and reports,
its index, and the study of one recipe across several random networks.

    build              build_zoo: the build as its list of stages (the names below re-exported)
    plan               ZooPlan: what a build makes, and the command line that makes it
    build_context      what every build stage reads: the plan, its folders, device, data, progress
    recipe             was recorded work (a ticket, the dense baseline, the reports) made with this recipe?
    training           one ticket's search or the dense baseline's training, kept on disk (also as a worker job)
    search_stage       stage 1: the tickets reused, resumed or searched (batched, in workers, or here)
    subset_stage       stage 2: the app's shipped test subset and each ticket's accuracy on it
    dense_stage        stage 3: the dense adversarially trained baseline
    evaluate           stage 4: evaluate_zoo, the reports as their list of stages and the jobs that run them
    report_stages      the reports' stamp, the sparsity curve, the transfer matrix and R2S
    autoattack_stage   AutoAttack per network in spans of AUTOATTACK_CHUNK images, resumable span by span
    eval_job           one evaluation job, as it travels to a worker process
    index              stage 5: pretrained_masks/index.json, what the CLI and the app list
    across_networks    one recipe on several random networks: mean +- std over networks
"""
from .build import (AUTOATTACK_CHUNK, DEFAULT_KEEP_RATIOS, INDEX_FORMAT, ZooPlan, build_zoo, evaluate_zoo, read_index,
                    update_index)

__all__ = ["AUTOATTACK_CHUNK", "DEFAULT_KEEP_RATIOS", "INDEX_FORMAT", "ZooPlan", "build_zoo", "evaluate_zoo",
           "read_index", "update_index"]
