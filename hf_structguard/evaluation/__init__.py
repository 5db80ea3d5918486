"""Evaluation of Before/unlearned models: accuracies, retrieval, representation consistency, MIA, results."""

from .accuracy import accuracy, predict
from .consistency import representation_consistency
from .evaluator import EvalSets, evaluate_model
from .evaluate_metrics import load_metric
from .mia import MIA_FEATURES, membership_inference_audit, mia_features, per_sample_loss
from .results import format_results_table, write_results
from .retrieval import retrieval_metrics, retrieve

__all__ = [
    "MIA_FEATURES",
    "EvalSets",
    "accuracy",
    "evaluate_model",
    "format_results_table",
    "load_metric",
    "membership_inference_audit",
    "mia_features",
    "per_sample_loss",
    "predict",
    "representation_consistency",
    "retrieval_metrics",
    "retrieve",
    "write_results",
]
