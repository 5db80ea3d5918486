"""`evaluate` metric: cosine image-to-image retrieval, R@k (at least one same-class item in the top k) and mAP."""

import datasets
import evaluate
import torch

from hf_structguard.evaluation.retrieval import retrieval_metrics

_DESCRIPTION = """Cosine retrieval on embeddings. A gallery item is a hit when it has the query's class.
R@k: percent of queries with at least one hit in their top k. mAP: mean average precision over the full
ranked gallery, in percent (AP = 0 for a query without any hit in the gallery). A query never retrieves
itself: without a gallery the queries are the gallery and query i skips item i."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of float): query embeddings.
    references (list of int): query class labels.
    gallery_embeddings (optional, (Ng, d) array or tensor): gallery; omit to use the queries themselves.
    gallery_labels (optional, (Ng,) ints): gallery class labels; given with gallery_embeddings.
    ks (optional, list of int): the k of R@k, default [1, 5, 10].
Returns:
    "R@k" for each k and "mAP", in percent.
Example:
    >>> from hf_structguard.evaluation import load_metric
    >>> metric = load_metric("retrieval")
    >>> metric.compute(predictions=[[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]], references=[0, 0, 1, 1], ks=[1])
    {'R@1': 100.0, 'mAP': 100.0}
"""


class Retrieval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, gallery_embeddings=None, gallery_labels=None, ks=(1, 5, 10)):
        gallery = None if gallery_embeddings is None else torch.as_tensor(gallery_embeddings, dtype=torch.float32)
        labels = None if gallery_labels is None else torch.as_tensor(gallery_labels)
        return retrieval_metrics(
            torch.as_tensor(predictions, dtype=torch.float32), torch.as_tensor(references), gallery, labels, ks=ks
        )
