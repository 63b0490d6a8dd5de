"""htr_utils: exact, fast Hessian routines for the reproduction of Sankar et al., AAAI 2021.

Curvature operators (Hessian, Gauss-Newton, residual) on any parameter subset, Lanczos with
full reorthogonalisation, stochastic Lanczos quadrature, Hutchinson traces and the Hessian
trace penalty, distances between spectra, and dense float64 references for testing.
The reproduction of the paper is the ``study`` subpackage: it imports this library, never the reverse.
"""
from .curvature import CurvatureOperator, eval_mode, hvp_operator
from .dense import dense_curvature, dense_ggn, dense_hessian, finite_difference_hessian
from .hutchinson import TraceEstimate, ggn_trace_penalty, hutchinson_trace, hutchpp_trace, trace_penalty
from .lanczos import SpectralDensity, lanczos, lanczos_tridiagonal, slq_density, top_eigenvalues
from .layers import layer_groups, middle_layers, middle_parameters_authors
from .layerwise import layerwise_spectra, layerwise_trace, lockstep_lanczos
from .spectra import (atoms_wasserstein, authors_distance, count_outliers, exact_spectrum_density,
                      spectral_distance)

__all__ = [
    "hvp_operator", "CurvatureOperator", "eval_mode",
    "lanczos", "lanczos_tridiagonal", "slq_density", "top_eigenvalues", "SpectralDensity",
    "hutchinson_trace", "hutchpp_trace", "trace_penalty", "ggn_trace_penalty", "TraceEstimate",
    "spectral_distance", "atoms_wasserstein", "authors_distance", "exact_spectrum_density", "count_outliers",
    "layer_groups", "middle_layers", "middle_parameters_authors",
    "layerwise_spectra", "layerwise_trace", "lockstep_lanczos",
    "dense_curvature", "dense_hessian", "dense_ggn", "finite_difference_hessian",
]
__version__ = "0.1.0"
