"""Image-to-image retrieval on pooled embeddings with cosine similarity: R@k and mAP.

Conventions (paper §5, "Recall@k" as in metric learning):
- a gallery item is a *hit* for a query when it has the query's (true) class;
- ``R@k`` is the percentage of queries with at least one hit among their k most similar gallery items
  (k larger than the gallery is clamped to the gallery size);
- ``mAP`` is the mean over queries of the average precision of the full ranked gallery, in percent;
  AP = (1/R) Σ_i precision@rank_i over the R hits of the query, and 0 for a query with no hit in the
  gallery (e.g. a forgotten class absent from the retain gallery). Similarity ties are ranked in gallery
  order (a stable sort), unlike sklearn's ``average_precision_score`` which groups tied scores;
- a query never retrieves itself: with ``gallery_embeddings=None`` the queries are the gallery and query i
  skips gallery item i; ``self_index`` names the excluded gallery item per query in general.

Queries are processed in chunks of ``chunk_size``, so memory grows with ``chunk_size × gallery size``
(about 24 bytes per pair), not with ``queries × gallery``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

DEFAULT_KS = (1, 5, 10)


def _check_embeddings(embeddings: torch.Tensor, labels: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    embeddings = torch.as_tensor(embeddings)
    labels = torch.as_tensor(labels).reshape(-1)
    if embeddings.ndim != 2:
        raise ValueError(f"{what} embeddings must be (N, d), got shape {tuple(embeddings.shape)}")
    if embeddings.shape[0] == 0:
        raise ValueError(f"{what} set is empty: pass at least one {what} embedding")
    if labels.shape[0] != embeddings.shape[0]:
        raise ValueError(f"{embeddings.shape[0]} {what} embeddings but {labels.shape[0]} {what} labels")
    return embeddings.float(), labels.long().to(embeddings.device)


def _prepare(query_embeddings, query_labels, gallery_embeddings, gallery_labels, self_index):
    """Validated, L2-normalised query/gallery tensors and the per-query excluded gallery index (-1: none)."""
    queries, query_labels = _check_embeddings(query_embeddings, query_labels, "query")
    if gallery_embeddings is None:
        if gallery_labels is not None or self_index is not None:
            raise ValueError("gallery_labels/self_index need gallery_embeddings (omit all three to use the queries)")
        gallery, gallery_labels = queries, query_labels
        self_index = torch.arange(queries.shape[0])
    else:
        if gallery_labels is None:
            raise ValueError("gallery_embeddings were given without gallery_labels")
        gallery, gallery_labels = _check_embeddings(gallery_embeddings, gallery_labels, "gallery")
    gallery = gallery.to(queries.device)
    gallery_labels = gallery_labels.to(queries.device)
    if gallery.shape[1] != queries.shape[1]:
        raise ValueError(f"query dim {queries.shape[1]} != gallery dim {gallery.shape[1]}")
    if self_index is None:
        self_index = torch.full((queries.shape[0],), -1, dtype=torch.long)
    self_index = torch.as_tensor(self_index).long().reshape(-1).to(queries.device)
    if self_index.shape[0] != queries.shape[0]:
        raise ValueError(f"self_index has {self_index.shape[0]} entries for {queries.shape[0]} queries")
    if self_index.numel() and (self_index.min() < -1 or self_index.max() >= gallery.shape[0]):
        raise ValueError(f"self_index entries must be -1 or a gallery position in [0, {gallery.shape[0]})")
    if bool((self_index >= 0).any()) and gallery.shape[0] < 2:
        raise ValueError("a gallery of one item leaves nothing to retrieve once the query itself is excluded")
    return F.normalize(queries, dim=1), query_labels, F.normalize(gallery, dim=1), gallery_labels, self_index


def _chunk_similarities(queries, gallery, self_index, start, stop):
    """Cosine similarities of queries[start:stop] to the gallery, excluded items set to -inf."""
    similarity = queries[start:stop] @ gallery.T
    rows = torch.arange(stop - start, device=similarity.device)
    excluded = self_index[start:stop]
    keep = excluded >= 0
    similarity[rows[keep], excluded[keep]] = float("-inf")
    return similarity, rows[keep], excluded[keep]


@torch.no_grad()
def retrieve(
    query_embeddings: torch.Tensor,
    gallery_embeddings: torch.Tensor,
    k: int,
    *,
    self_index: torch.Tensor | None = None,
    chunk_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine scores and gallery indices ``(Nq, k)`` of each query's k nearest gallery items, best first.

    ``self_index`` (``(Nq,)``, -1 for none) names a gallery item each query must not retrieve (itself).
    """
    queries = F.normalize(torch.as_tensor(query_embeddings).float(), dim=1)
    gallery = F.normalize(torch.as_tensor(gallery_embeddings).float().to(queries.device), dim=1)
    if self_index is None:
        self_index = torch.full((queries.shape[0],), -1, dtype=torch.long)
    self_index = torch.as_tensor(self_index).long().reshape(-1).to(queries.device)
    if self_index.shape[0] != queries.shape[0]:
        raise ValueError(f"self_index has {self_index.shape[0]} entries for {queries.shape[0]} queries")
    available = gallery.shape[0] - int(bool((self_index >= 0).any()))
    if not 1 <= k <= available:
        raise ValueError(f"k must be in [1, {available}] for this gallery, got {k}")
    scores, indices = [], []
    for start in range(0, queries.shape[0], chunk_size):
        stop = min(start + chunk_size, queries.shape[0])
        similarity, _, _ = _chunk_similarities(queries, gallery, self_index, start, stop)
        top = similarity.topk(k, dim=1)
        scores.append(top.values)
        indices.append(top.indices)
    return torch.cat(scores), torch.cat(indices)


@torch.no_grad()
def retrieval_metrics(
    query_embeddings: torch.Tensor,
    query_labels: torch.Tensor,
    gallery_embeddings: torch.Tensor | None = None,
    gallery_labels: torch.Tensor | None = None,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    self_index: torch.Tensor | None = None,
    chunk_size: int = 256,
) -> dict[str, float]:
    """``{"R@k": %, ..., "mAP": %}`` of cosine retrieval (see the module docstring for the conventions).

    Omit the gallery to use the queries as gallery with self-exclusion (retain queries vs retain gallery);
    pass it for, e.g., forget queries vs retain gallery.
    """
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    queries, query_labels, gallery, gallery_labels, self_index = _prepare(
        query_embeddings, query_labels, gallery_embeddings, gallery_labels, self_index
    )
    num_queries, num_gallery = queries.shape[0], gallery.shape[0]
    top_k = min(max(ks), num_gallery)
    ranks = torch.arange(1, num_gallery + 1, device=queries.device, dtype=torch.float32)
    recall_hits = {k: 0 for k in ks}
    ap_sum = 0.0
    for start in range(0, num_queries, chunk_size):
        stop = min(start + chunk_size, num_queries)
        similarity, rows, excluded = _chunk_similarities(queries, gallery, self_index, start, stop)
        relevant = query_labels[start:stop, None] == gallery_labels[None, :]
        relevant[rows, excluded] = False
        top_hits = relevant.gather(1, similarity.topk(top_k, dim=1).indices)
        for k in ks:
            recall_hits[k] += int(top_hits[:, :k].any(dim=1).sum())
        order = similarity.sort(dim=1, descending=True, stable=True).indices
        ranked = relevant.gather(1, order).float()
        precision_at_hits = ranked.cumsum(dim=1) / ranks * ranked
        num_relevant = ranked.sum(dim=1)
        ap_sum += float((precision_at_hits.sum(dim=1) / num_relevant.clamp(min=1)).sum())
    metrics = {f"R@{k}": 100.0 * recall_hits[k] / num_queries for k in ks}
    metrics["mAP"] = 100.0 * ap_sum / num_queries
    return metrics
