"""`evaluate` metric: top-1 accuracy in percent, as reported for A_test, A_r and A_f (original labels)."""

import datasets
import evaluate
import torch

from hf_structguard.evaluation.accuracy import accuracy

_DESCRIPTION = """Top-1 accuracy in percent (0-100), the A_test / A_r / A_f numbers of instance unlearning.
For A_f pass the ORIGINAL labels of the forget samples as references; tables report 100 - A_f."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): reference class ids.
Returns:
    accuracy (float): percent of predictions equal to their reference.
Example:
    >>> from hf_structguard.evaluation import load_metric
    >>> metric = load_metric("unlearning_accuracy")
    >>> metric.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])
    {'accuracy': 75.0}
"""


class UnlearningAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        return {"accuracy": accuracy(torch.as_tensor(predictions), torch.as_tensor(references))}
