"""Structure: the anchor space, ``S = norm(V)·Aᵀ``, alignment measures and structure-aware importance.

Definitions follow docs/concepts.md#structure and #losses:

- ``S_ori = norm(M(g_ori(x_s)))·Aᵀ`` with the frozen original model; ``M`` is the identity when ``d == d_a``,
  else the fixed seeded random map :func:`hf_structguard.modeling.anchor_space_map` (``config.feature_map_seed``).
- ``S_unl = norm(p(g_unl(x_s)))·Aᵀ`` read at the projector output when ``d == d_a``, else at its hidden layer;
  a residual projector (identity at start) is read at its output through ``M``, like features, so that
  ``S_unl = S_ori`` before the first update.
  A model without a projector is read like the original one: ``norm(M(g_unl(x_s)))·Aᵀ``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .modeling import anchor_space_map

ALIGNMENT_MEASURES = ("cosine", "mse", "kl", "mmd", "wasserstein")
ALIGNMENT_AXES = ("row", "column")
IMPORTANCE_MODES = ("batch", "per_sample")


def structure(vectors: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Affinities ``norm(vectors)·Aᵀ`` (N, b) between L2-normalised rows of ``vectors`` and the anchors."""
    return F.normalize(vectors, dim=-1) @ anchors.T


class AnchorSpace:
    """The anchors ``A`` (b, d_a) and the fixed map ``M`` of d-dim features into their space.

    Args:
        anchors: (b, d_a) anchor embeddings (L2-normalised here).
        feature_dim: ``d``, the pooled feature size of the backbone.
        feature_map_seed: seed of ``M`` (used only when ``d != d_a``).
    """

    def __init__(self, anchors: torch.Tensor, feature_dim: int, feature_map_seed: int = 0) -> None:
        if anchors.ndim != 2 or len(anchors) == 0:
            raise ValueError(f"anchors must be a non-empty (b, d_a) matrix, got shape {tuple(anchors.shape)}")
        self.anchors = F.normalize(anchors.detach().float(), dim=1)
        self.feature_dim = int(feature_dim)
        self.feature_map = (
            None if self.feature_dim == self.dim else anchor_space_map(self.feature_dim, self.dim, feature_map_seed)
        )

    @property
    def dim(self) -> int:
        """``d_a``, the anchor dimension."""
        return int(self.anchors.shape[1])

    @property
    def num_anchors(self) -> int:
        return int(self.anchors.shape[0])

    def to(self, device: torch.device | str) -> AnchorSpace:
        self.anchors = self.anchors.to(device)
        if self.feature_map is not None:
            self.feature_map = self.feature_map.to(device)
        return self

    def map_features(self, features: torch.Tensor) -> torch.Tensor:
        """``M(features)``: identity when ``d == d_a``, else ``features @ M``."""
        return features if self.feature_map is None else features @ self.feature_map

    def feature_structure(self, features: torch.Tensor) -> torch.Tensor:
        """``norm(M(features))·Aᵀ`` — the structure of plain backbone features (``S_ori`` for the original)."""
        return structure(self.map_features(features), self.anchors)

    def projector_vectors(self, projector: nn.Module, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(p(features), v)``: the projector output and the vectors the structure is read from.

        ``v`` is the projector output when ``d == d_a``, else its hidden layer (dimension d_a); for a residual
        projector always ``M(output)``.
        """
        out, hidden = projector(features, return_hidden=True)
        if getattr(projector, "residual", False):
            vectors = self.map_features(out)
        else:
            vectors = out if self.feature_map is None else hidden
        if vectors.shape[1] != self.dim:
            raise ValueError(
                f"the projector gives {vectors.shape[1]}-dim structure vectors but the anchors are {self.dim}-dim; "
                "the projector must be added with add_projector(anchor_dim)"
            )
        return out, vectors

    def model_structure(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        """``S_unl`` of a model's features: through its projector when it has one, else ``norm(M(g))·Aᵀ``."""
        if getattr(model, "projector", None) is None:
            return self.feature_structure(features)
        return structure(self.projector_vectors(model.projector, features)[1], self.anchors)


def _median_bandwidth(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Median of the positive pairwise distances among the rows of ``[x; y]`` (detached); 1 if there are none."""
    points = torch.cat([x, y]).detach()
    distances = torch.cdist(points, points)
    positive = distances[distances > 0]
    return positive.median() if positive.numel() else distances.new_ones(())


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None) -> torch.Tensor:
    """Biased squared MMD between the row sets ``x`` and ``y`` with ``k(a, b) = exp(−‖a−b‖² / (2σ²))``.

    ``σ = bandwidth``; ``None`` uses the median heuristic (median pairwise distance among all rows, detached).
    """
    sigma = _median_bandwidth(x, y) if bandwidth is None else torch.as_tensor(bandwidth, device=x.device)

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-torch.cdist(a, b).pow(2) / (2 * sigma**2))

    return kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()


def alignment_loss(
    s_ori: torch.Tensor,
    s_unl: torch.Tensor,
    measure: str = "cosine",
    axis: str = "row",
    temperature: float = 0.1,
    bandwidth: float | None = None,
) -> torch.Tensor:
    """Structure-aware alignment ``L_align`` between ``S_ori`` and ``S_unl`` (both (n, b)).

    ``axis="row"`` treats each probe's affinities over the b anchors as one distribution (the reference
    implementation's reading); ``"column"`` treats each anchor's affinities over the n probes as one (the
    paper's Eq. 2, sum over b). Measures (paper Table 6):

    - ``cosine``: ``1 − mean cos(S_ori[i], S_unl[i])`` (default);
    - ``mse``: mean squared difference;
    - ``kl``: ``mean_i KL(softmax(S_ori[i]/τ) ‖ softmax(S_unl[i]/τ))``, τ = ``temperature``;
    - ``mmd``: squared RBF-kernel MMD between the two sets of rows (:func:`mmd_rbf`; ``bandwidth`` σ,
      None = median heuristic);
    - ``wasserstein``: mean over rows of the 1-D Wasserstein-1 distance between the empirical distributions
      of the row's affinities (mean absolute difference of the sorted values).
    """
    if s_ori.shape != s_unl.shape:
        raise ValueError(f"S_ori {tuple(s_ori.shape)} and S_unl {tuple(s_unl.shape)} differ in shape")
    if axis == "column":
        s_ori, s_unl = s_ori.T, s_unl.T
    elif axis != "row":
        raise ValueError(f"alignment axis must be one of {ALIGNMENT_AXES}, got {axis!r}")
    s_ori = s_ori.to(s_unl.dtype)
    if measure == "cosine":
        return 1 - F.cosine_similarity(s_unl, s_ori, dim=1).mean()
    if measure == "mse":
        return F.mse_loss(s_unl, s_ori)
    if measure == "kl":
        return F.kl_div(
            F.log_softmax(s_unl / temperature, dim=1),
            F.log_softmax(s_ori / temperature, dim=1),
            reduction="batchmean",
            log_target=True,
        )
    if measure == "mmd":
        return mmd_rbf(s_ori, s_unl, bandwidth)
    if measure == "wasserstein":
        return (s_unl.sort(dim=1).values - s_ori.sort(dim=1).values).abs().mean()
    raise ValueError(f"alignment measure must be one of {ALIGNMENT_MEASURES}, got {measure!r}")


def importance_penalty(
    parameters: Iterable[tuple[str, torch.Tensor]],
    reference: dict[str, torch.Tensor],
    importance: dict[str, torch.Tensor],
) -> torch.Tensor:
    """Structure-aware regulariser ``L_reg = ½ Σ_j I_j (ψ_j − ψ_j^ori)²`` over the named parameters ψ."""
    terms = [(importance[name] * (param - reference[name]).pow(2)).sum() for name, param in parameters]
    return 0.5 * torch.stack(terms).sum()


def normalized_importance(importance: dict[str, torch.Tensor], mode: str = "none") -> dict[str, torch.Tensor]:
    """``importance`` as is (``"none"``), divided by its largest entry over all tensors (``"max"``) or by each
    tensor's largest entry (``"tensor_max"``, as L2UL scales its MAS importance per tensor); scaled, I ∈ [0, 1]."""
    if mode == "none":
        return importance
    if mode not in ("max", "tensor_max"):
        raise ValueError(f"importance normalization must be 'none', 'max' or 'tensor_max', got {mode!r}")
    largest = max(float(value.max()) for value in importance.values())
    scaled = {}
    for name, value in importance.items():
        scale = float(value.max()) if mode == "tensor_max" else largest
        scaled[name] = value / scale if scale > 0 else value
    return scaled


def elastic_net(weight: torch.Tensor, l1_ratio: float = 0.99) -> torch.Tensor:
    """Classifier regulariser ``l1_ratio·‖W‖₁ + ½(1 − l1_ratio)·‖W‖²_F`` (0.99‖W‖₁ + ½·0.01‖W‖²_F by default)."""
    return l1_ratio * weight.abs().sum() + 0.5 * (1 - l1_ratio) * weight.pow(2).sum()


class _StructureModule(nn.Module):
    """``x -> S_unl(x)`` as one module, so that :func:`torch.func.functional_call` can differentiate it."""

    def __init__(self, model: nn.Module, space: AnchorSpace) -> None:
        super().__init__()
        self.model = model
        self.space = space

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.space.model_structure(self.model, self.model.features(images))


def structure_importance(
    model: nn.Module,
    space: AnchorSpace,
    images: torch.Tensor,
    s_ori: torch.Tensor,
    parameters: Iterable[tuple[str, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    mode: str = "batch",
    num_samples: int = 50_000,
    batch_size: int = 128,
    seed: int = 0,
    per_sample_chunk: int = 16,
    batch_statistics: bool = True,
    restore_buffers: bool = True,
) -> dict[str, torch.Tensor]:
    """Structure-aware importance ``I_j`` of the parameters ψ (docs/concepts.md#importance, paper Eq. 4).

    Args:
        model: the model being unlearned (with its projector); its state is left unchanged.
        space: the anchor space; ``S_unl`` is read as in :meth:`AnchorSpace.model_structure`.
        images, s_ori: all probes (N_s, 3, H, W) and their original structure (N_s, b).
        parameters: ``(name, parameter)`` of ψ (the feature extractor).
        loss_fn: ``(S_ori_batch, S_unl_batch) -> L_align``.
        mode: ``"batch"`` (reference implementation): ``Σ_B n_B·|∇ L_align(B)| / Σ_B n_B`` over minibatches of
            ``batch_size`` probes drawn by cycling seeded permutations of the probe set until ``num_samples``
            probes were seen, BatchNorm in train mode (batch statistics, as in the loss; ``batch_statistics=False``:
            eval mode, for runs whose BatchNorm statistics are frozen); size-1 batches are skipped.
            ``"per_sample"`` (Eq. 4 exactly): ``(1/N_s) Σ_s |∇ L_align(x_s)|`` over each probe once,
            BatchNorm in eval mode, computed with ``torch.func.vmap`` in chunks of ``per_sample_chunk``.

        restore_buffers: put the BatchNorm running statistics back afterwards (False: leave the importance pass's
            updates in place, as the reference implementation does).

    Returns:
        ``{name: I}`` with ``I`` ≥ 0 shaped like the parameter; zero where L_align does not reach it.
    """
    named = [(name, param) for name, param in parameters if param.requires_grad]
    if not named:
        raise ValueError("structure_importance needs at least one trainable parameter")
    if len(images) != len(s_ori):
        raise ValueError(f"{len(images)} probe images but {len(s_ori)} rows of S_ori")
    if mode not in IMPORTANCE_MODES:
        raise ValueError(f"importance mode must be one of {IMPORTANCE_MODES}, got {mode!r}")
    module = _StructureModule(model, space)
    was_training = model.training
    buffers = {name: buf.detach().clone() for name, buf in model.named_buffers()}
    totals = {name: torch.zeros_like(param) for name, param in named}
    try:
        if mode == "batch":
            model.train(batch_statistics)
            count = _accumulate_batch_gradients(
                module, named, images, s_ori, loss_fn, totals, num_samples, batch_size, seed, batch_statistics
            )
        else:
            model.eval()
            count = _accumulate_per_sample_gradients(
                module, named, images, s_ori, loss_fn, totals, batch_size, per_sample_chunk
            )
    finally:
        if restore_buffers:
            with torch.no_grad():
                for name, buf in model.named_buffers():
                    buf.copy_(buffers[name])
        model.train(was_training)
    return {name: total.detach() / count for name, total in totals.items()}


def _accumulate_batch_gradients(
    module: nn.Module,
    named: list[tuple[str, torch.Tensor]],
    images: torch.Tensor,
    s_ori: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    totals: dict[str, torch.Tensor],
    num_samples: int,
    batch_size: int,
    seed: int,
    skip_single: bool,
) -> int:
    """``"batch"`` importance: add ``n_B·|∇ L_align(B)|`` to ``totals`` over minibatches of seeded permutations of
    the probes until ``num_samples`` probes were seen (size-1 batches skipped when ``skip_single``); returns the
    number seen."""
    device = named[0][1].device
    generator = torch.Generator().manual_seed(int(seed))
    seen = 0
    bar = tqdm(total=num_samples, desc="structure importance", unit="probe", leave=False)
    while seen < num_samples:
        for rows in torch.randperm(len(images), generator=generator).split(batch_size):
            if len(rows) < 2 and skip_single:
                continue
            loss = loss_fn(s_ori[rows].to(device), module(images[rows].to(device)))
            grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
            for (name, _), grad in zip(named, grads):
                if grad is not None:
                    totals[name] += len(rows) * grad.abs()
            seen += len(rows)
            bar.update(len(rows))
            if seen >= num_samples:
                break
        if seen == 0:
            raise ValueError("batch importance needs at least 2 probes")
    bar.close()
    return seen


def _accumulate_per_sample_gradients(
    module: nn.Module,
    named: list[tuple[str, torch.Tensor]],
    images: torch.Tensor,
    s_ori: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    totals: dict[str, torch.Tensor],
    batch_size: int,
    chunk: int,
) -> int:
    """``"per_sample"`` importance (Eq. 4): add ``|∇ L_align(x_s)|`` of every probe to ``totals`` (``torch.func.vmap``
    in chunks of ``chunk``); returns the number of probes."""
    device = named[0][1].device
    params = {f"model.{name}": param.detach() for name, param in named}

    def sample_loss(p, image, target):
        s_unl = torch.func.functional_call(module, p, (image.unsqueeze(0),))
        return loss_fn(target.unsqueeze(0), s_unl)

    per_sample_grad = torch.func.vmap(torch.func.grad(sample_loss), in_dims=(None, 0, 0), chunk_size=chunk)
    for rows in torch.arange(len(images)).split(batch_size):
        with torch.no_grad():  # no outer graph (e.g. through the projector); the inner grad still runs
            grads = per_sample_grad(params, images[rows].to(device), s_ori[rows].to(device))
        for name, _ in named:
            totals[name] += grads[f"model.{name}"].abs().sum(0)
    return len(images)
