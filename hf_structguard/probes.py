"""Surrogate probe set ``D_s`` (docs/concepts.md#probe-set): targeted L2 PGD examples around each forget image.

For every forget image, ``num_per_image`` targets are drawn uniformly from the other classes; each probe is
the targeted L2 PGD example of the ORIGINAL model towards its target, in [0, 1] pixel space, and is
labelled with that target (no success filter).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


@dataclass
class ProbeConfig:
    """Targeted L2 PGD settings: ``epsilon`` (L2 radius in pixel units), ``step_size``, ``num_steps``,
    ``num_per_image`` (N_adv), ``random_start`` (uniform start in the ε-ball), ``seed`` (targets and
    starts), ``batch_size`` (probes attacked at once)."""

    epsilon: float = 3.0
    step_size: float = 0.1
    num_steps: int = 100
    num_per_image: int = 20
    random_start: bool = True
    seed: int = 0
    batch_size: int = 256

    def __post_init__(self):
        if not self.epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {self.epsilon}.")
        if not self.step_size > 0:
            raise ValueError(f"step_size must be > 0, got {self.step_size}.")
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}.")
        if self.num_per_image < 1:
            raise ValueError(f"num_per_image must be >= 1, got {self.num_per_image}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")


@dataclass
class ProbeSet:
    """Probe images (Ns, 3, H, W) in [0, 1], their target classes (= labels), the index of the forget image
    each was made from, and that image's true label. ``config`` records how they were generated."""

    images: torch.Tensor
    targets: torch.Tensor
    source_index: torch.Tensor
    true_labels: torch.Tensor
    config: ProbeConfig | None = None

    def __len__(self) -> int:
        return len(self.targets)

    def to_dict(self) -> dict[str, torch.Tensor]:
        """The four tensors, contiguous on the CPU, keyed by field name."""
        names = ("images", "targets", "source_index", "true_labels")
        return {name: getattr(self, name).detach().cpu().contiguous() for name in names}

    def save(self, path: str | Path) -> None:
        """Write a safetensors file (the generation config goes into its metadata)."""
        metadata = {"probe_config": json.dumps(asdict(self.config))} if self.config is not None else None
        safetensors.torch.save_file(self.to_dict(), str(path), metadata=metadata)

    @classmethod
    def load(cls, path: str | Path) -> ProbeSet:
        """Read a file written by :meth:`save`."""
        with safetensors.safe_open(str(path), framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
            metadata = handle.metadata() or {}
        config = ProbeConfig(**json.loads(metadata["probe_config"])) if "probe_config" in metadata else None
        return cls(**tensors, config=config)


def _logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    out = model(images)
    return out.logits if hasattr(out, "logits") else out


def _l2(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))


def generate_probes(
    model: nn.Module,
    forget_images: torch.Tensor,
    forget_labels: torch.Tensor,
    num_classes: int,
    config: ProbeConfig | None = None,
    progress: bool = True,
) -> ProbeSet:
    """Targeted L2 PGD probes from ``model`` (the ORIGINAL model), ``config.num_per_image`` per forget image.

    Targets are ``(y + U{1..C-1}) mod C`` from a seeded CPU generator (uniform over the other classes);
    random starts come from the same generator, so the probes are reproducible. Each step moves by
    ``step_size`` along the normalised gradient that lowers the target cross-entropy, clips to [0, 1] and
    projects onto the ε-ball. The model runs in eval mode and gets its mode back; no parameter gradients
    are written. Probes are ordered by forget image (``source_index`` is non-decreasing).
    """
    config = config or ProbeConfig()
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 to pick targets other than the true label, got {num_classes}.")
    if forget_images.dim() != 4 or forget_images.shape[1] != 3:
        raise ValueError(f"forget_images must be (N, 3, H, W), got shape {tuple(forget_images.shape)}.")
    if forget_labels.shape != (len(forget_images),):
        raise ValueError(f"forget_labels must have shape ({len(forget_images)},), got {tuple(forget_labels.shape)}.")
    if len(forget_images) == 0:
        raise ValueError("The forget set is empty.")
    if forget_images.min() < 0 or forget_images.max() > 1:
        raise ValueError("forget_images must be in [0, 1] (normalisation happens inside the model).")
    labels = forget_labels.detach().cpu().long()
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"forget_labels must be in [0, {num_classes}), got [{labels.min()}, {labels.max()}].")

    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    source_index = torch.arange(len(labels)).repeat_interleave(config.num_per_image)
    true_labels = labels[source_index]
    offsets = torch.randint(1, num_classes, (len(source_index),), generator=generator)
    targets = (true_labels + offsets) % num_classes

    # random starts for all probes up front (uniform in the ε-ball), so they do not depend on batch_size;
    # the result buffer holds them until each chunk overwrites them with its probes
    probes = torch.zeros(len(source_index), *forget_images.shape[1:])
    if config.random_start:
        probes.normal_(generator=generator)
        radius = config.epsilon * torch.rand(len(probes), generator=generator) ** (1.0 / probes[0].numel())
        probes *= (radius.view(-1, 1, 1, 1) / _l2(probes))

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    chunks = torch.arange(len(source_index)).split(config.batch_size)
    bar = tqdm(total=len(chunks) * config.num_steps, desc="PGD probes", unit="step", disable=not progress)
    try:
        for chunk in chunks:
            x = forget_images.detach()[source_index[chunk].to(forget_images.device)].to(device, torch.float32)
            target = targets[chunk].to(device)
            delta = (x + probes[chunk].to(device)).clamp(0, 1) - x
            for _ in range(config.num_steps):
                delta.requires_grad_(True)
                with torch.enable_grad():
                    logits = _logits(model, x + delta)
                    if logits.shape[-1] != num_classes:
                        raise ValueError(f"The model outputs {logits.shape[-1]} classes, not {num_classes}.")
                    loss = F.cross_entropy(logits, target, reduction="sum")
                    (grad,) = torch.autograd.grad(loss, delta)
                with torch.no_grad():
                    delta = delta - config.step_size * grad / _l2(grad).clamp_min(1e-12)
                    delta = (x + delta).clamp(0, 1) - x
                    delta = delta * (config.epsilon / _l2(delta).clamp_min(1e-12)).clamp(max=1.0)
                bar.update(1)
            probes[chunk] = (x + delta).clamp(0, 1).detach().cpu()
    finally:
        bar.close()
        model.train(was_training)
    return ProbeSet(images=probes, targets=targets, source_index=source_index, true_labels=true_labels, config=config)


def auto_step_size(epsilon: float, num_steps: int) -> float:
    """PGD step tied to the radius and the iteration count, ``2.5·ε/T`` (Madry et al., 2018).

    With the paper's ε = 4 and T = 100 it is the paper's 0.1; with fewer iterations it grows so that the walk
    can still cross the ε-ball (10 iterations of 0.1 reach at most 1.0, a third of ε = 3).
    """
    return 2.5 * float(epsilon) / int(num_steps)


@torch.no_grad()
def target_hit_rate(model: nn.Module, probes: ProbeSet, batch_size: int = 256) -> float:
    """Share (%) of probes that ``model`` (eval mode) classifies as their target: the probe set's quality.

    A probe that misses its target still carries its forget image's true class, so retention on it pulls
    against the deletion.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        hits = sum(
            int((_logits(model, chunk.to(device)).argmax(dim=1).cpu() == target).sum())
            for chunk, target in zip(probes.images.split(batch_size), probes.targets.split(batch_size))
        )
    finally:
        model.train(was_training)
    return 100.0 * hits / max(len(probes), 1)


def probe_config_for(config, seed: int | None = None, epsilon: float | None = None) -> ProbeConfig:
    """The :class:`ProbeConfig` of an ``UnlearningConfig`` (its ``probe_*`` fields; ``step_size`` None = auto);
    ``epsilon`` replaces ``config.probe_epsilon`` (the auto step follows it)."""
    epsilon = config.probe_epsilon if epsilon is None else epsilon
    step = config.probe_step_size
    return ProbeConfig(
        epsilon=epsilon,
        step_size=auto_step_size(epsilon, config.probe_num_steps) if step is None else step,
        num_steps=config.probe_num_steps,
        num_per_image=config.probes_per_image,
        seed=config.seed if seed is None else seed,
    )


#: The shrinking radius search (docs/concepts.md#probe-radius): radii ε·2^-j for j = 1..MAX_HALVINGS, each tried
#: on the probes of at most SEARCH_IMAGES forget images.
MAX_HALVINGS = 3
SEARCH_IMAGES = 32


def shrink_probe_epsilon(
    model: nn.Module, forget_images: torch.Tensor, forget_labels: torch.Tensor, num_classes: int, config
) -> ProbeConfig:
    """The :class:`ProbeConfig` with the smallest radius ``probe_epsilon·2^-j`` (``j ≤ MAX_HALVINGS``, halving
    stops at the first radius that fails) at which the targeted PGD probes of ``model`` still reach their
    target class for at least ``config.probe_min_hit_rate`` % of probes; ``probe_epsilon`` itself when no
    smaller radius does. The hit rate is measured on the probes of a seeded subsample of the forget images."""
    chosen = probe_config_for(config)
    generator = torch.Generator().manual_seed(chosen.seed)
    rows = torch.randperm(len(forget_images), generator=generator)[:SEARCH_IMAGES].sort().values
    images, labels = forget_images[rows.to(forget_images.device)], forget_labels[rows.to(forget_labels.device)]
    for halvings in range(1, MAX_HALVINGS + 1):
        candidate = probe_config_for(config, epsilon=config.probe_epsilon / 2**halvings)
        hit_rate = target_hit_rate(model, generate_probes(model, images, labels, num_classes, candidate, progress=False))
        logger.info("probe radius search: ε %.3g reaches the target for %.1f %% of probes", candidate.epsilon, hit_rate)
        if hit_rate < config.probe_min_hit_rate:
            break
        chosen = candidate
    return chosen


def probes_for_config(
    model: nn.Module,
    forget_images: torch.Tensor,
    forget_labels: torch.Tensor,
    num_classes: int,
    config,
    cache: dict | None = None,
) -> ProbeSet:
    """Probes from ``model`` for an ``UnlearningConfig``'s PGD settings, at the radius
    :func:`shrink_probe_epsilon` finds when ``config.probe_min_hit_rate`` > 0; methods whose settings agree
    share one set through ``cache`` (keyed by the :class:`ProbeConfig` and the hit-rate floor)."""
    min_hit_rate = config.probe_min_hit_rate
    probe_config = probe_config_for(config)
    key = (tuple(sorted(asdict(probe_config).items())), min_hit_rate)
    if cache is None:
        cache = {}
    if key not in cache:
        if min_hit_rate > 0:
            probe_config = shrink_probe_epsilon(model, forget_images, forget_labels, num_classes, config)
            logger.info("probes at ε %.3g (probe_min_hit_rate %g %%)", probe_config.epsilon, min_hit_rate)
        cache[key] = generate_probes(model, forget_images, forget_labels, num_classes, probe_config)
    return cache[key]
