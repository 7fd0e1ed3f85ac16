"""Layer 4, attacks and evaluation.

Attacks, in [0, 1] pixel space:
    attack_objectives, threat_models, model_modes, attack_inputs   what an attack maximises, its norm ball,
                                                                   the model's mode, the input checks
    pgd_family        PGD (L∞ / L2, restarts), FGSM, FGSM-RS, CW-L∞
    attacks           the attack registry: AttackConfig, run_attack (re-exports the PGD family)
    ensemble_attacks  attacks on randomized ensembles: expected accuracy, ARC, APGD on the expectation
    autoattack        AutoAttack, standard or custom, and as a suite member
    adaptive          the adaptive attacks on R2S's random switch
Evaluation:
    suite             one interface: an evaluation attack scores a model per image; a suite's per-image
                      worst case
    per_image         per-image results, the binomial standard error, the paired interval
    metrics           accuracy, robust accuracy, the sparsity curve, the transfer matrix
    r2s, switch_probabilities   the random switch and its probabilities chosen on validation
    verdicts          every member's verdict on a batch, fast (bf16, near-ties rechecked in fp32)
    protocols         R2S under the paper's protocol and the adaptive ones
    sanity            the sanity checks of an evaluation (gradient masking)
    compare           like with like: R2S, its members and dense AT on the same images
    reports           result files with their provenance, and their figures
"""
