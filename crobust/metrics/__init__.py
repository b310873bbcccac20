"""Metrics of compressibility, norms, ranks, the paper's bounds and representation shifts (docs/paper.md §3).

Every function is a pure jit-able function of arrays; matrices use the paper's orientation W (..., out, in) with
a neuron as a row (convert flax kernels with :mod:`crobust.models.matrices`). :func:`layer_report` computes all
per-layer metrics of a whole population in one jitted call.

- compressibility: :func:`best_k_error`, :func:`dispersion`, :func:`neuron_compressibility`,
  :func:`spectral_compressibility`, :func:`smallest_k`, the reference's :func:`par_comp` / :func:`net_comp`;
- spectral: :func:`singular_values`, :func:`norm_inf`, :func:`norm_2`, :func:`norm_fro`, :func:`stable_rank`,
  :func:`effective_rank`, :func:`effective_rank_log_reference`;
- bounds: Theorem 3.1 (:func:`theorem31_spectral`, :func:`theorem31_neuron`), Theorem 3.2
  (:func:`alignment_term`, :func:`encoder_lipschitz`), Corollary 3.3 (:func:`robustness_gap_bound`);
- certified radii: :func:`certified_radius` from pairwise Lipschitz constants (:func:`linear_pair_constants`,
  :func:`mlp_pair_constants`), a per-point lower bound on the adversarial radius;
- representation: :func:`representation_shift`, :func:`singular_direction_alignment`,
  :func:`empirical_lipschitz_ratio`.
"""

from crobust.metrics.alignment import (activation_patterns, alignment_term, max_pattern_norm, op_norm,
                                       top_k_substructure)
from crobust.metrics.bounds import (adversarial_risk_bound, binary_head_vector, empirical_gap, encoder_lipschitz,
                                    lipschitz_aligned, lipschitz_naive, mean_logistic_loss, robustness_gap_bound,
                                    theorem31_check, theorem31_neuron, theorem31_spectral)
from crobust.metrics.certified import certified_radius, linear_pair_constants, mlp_pair_constants
from crobust.metrics.compressibility import (best_k_error, best_k_error_curve, reference_compressibility,
                                             compressibility_stats, dispersion, is_compressible, kept_count,
                                             net_comp, neuron_compressibility, neuron_smallest_k, par_comp,
                                             row_l1_norms, smallest_k, spectral_compressibility,
                                             spectral_smallest_k)
from crobust.metrics.report import LAYER_METRICS, input_scale_of, layer_report, matrix_report, report_rows
from crobust.metrics.representation import (empirical_lipschitz_ratio, representation_shift,
                                            singular_direction_alignment)
from crobust.metrics.spectral import (effective_rank, effective_rank_log_reference, norm_2, norm_fro, norm_inf,
                                      norm_ratios, singular_values, singular_values_with_info, spectral_summary,
                                      stable_rank)

__all__ = [
    # compressibility
    "kept_count", "best_k_error", "reference_compressibility", "is_compressible", "dispersion", "compressibility_stats",
    "best_k_error_curve", "smallest_k", "row_l1_norms", "neuron_compressibility", "spectral_compressibility",
    "neuron_smallest_k", "spectral_smallest_k", "par_comp", "net_comp",
    # spectral
    "singular_values", "singular_values_with_info", "norm_inf", "norm_2", "norm_fro", "norm_ratios", "stable_rank",
    "effective_rank", "effective_rank_log_reference", "spectral_summary",
    # bounds and alignment
    "theorem31_spectral", "theorem31_neuron", "theorem31_check", "top_k_substructure", "max_pattern_norm",
    "alignment_term", "op_norm", "activation_patterns", "lipschitz_naive", "lipschitz_aligned", "encoder_lipschitz",
    "robustness_gap_bound", "adversarial_risk_bound", "binary_head_vector", "mean_logistic_loss", "empirical_gap",
    # certified radii
    "certified_radius", "linear_pair_constants", "mlp_pair_constants",
    # representation
    "representation_shift", "singular_direction_alignment", "empirical_lipschitz_ratio",
    # report
    "layer_report", "matrix_report", "report_rows", "LAYER_METRICS", "input_scale_of",
]
