"""A ColBERT-style late-interaction encoder over any Hugging Face encoder (METHODS.md 4(b)-(c)).

Every token of a text becomes a vector: encoder hidden state -> optional linear projection to
`projection_dim` (no bias) -> L2 normalisation. A query and a passage are compared by MaxSim:
for each query token, the best-matching passage token, summed over the query tokens.

* similarity `cosine`: token similarity is the dot product of the normalised vectors;
* similarity `l2`: token similarity is the negative squared L2 distance (CollectiveKD's choice).

Queries can be padded with [MASK] tokens up to `query_max_length` (query augmentation); those
tokens are attended to and take part in MaxSim. Passage padding never takes part; with
`mask_punctuation`, passage tokens that are single punctuation marks do not either.

The same class is the late-interaction teacher's model and a trainable student:
`embed_queries` / `embed_passages` return (tokens, mask) with gradients and `forward` runs both
sides in one call (so DDP and DeepSpeed see a single forward).
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoTokenizer

from raykd.errors import ConfigError

OPTIONS_FILE = "raykd_late_interaction.json"
PROJECTION_FILE = "late_interaction_projection.safetensors"
LI_SIMILARITIES = ("cosine", "l2")
PROJECTION_SEED = 0


@dataclass
class LateInteractionOptions:
    """How text becomes token vectors and token vectors become a score."""

    projection_dim: int | None = None
    similarity: Literal["cosine", "l2"] = "cosine"
    query_max_length: int = 32
    passage_max_length: int = 180
    query_augmentation: bool = False
    mask_punctuation: bool = False

    def validate(self) -> None:
        if self.similarity not in LI_SIMILARITIES:
            raise ConfigError("similarity",
                              f"{self.similarity!r} is not one of {LI_SIMILARITIES} for late interaction")
        if self.projection_dim is not None and self.projection_dim < 1:
            raise ConfigError("projection_dim", f"must be >= 1, got {self.projection_dim}")
        for name in ("query_max_length", "passage_max_length"):
            if getattr(self, name) < 2:
                raise ConfigError(name, f"must be >= 2, got {getattr(self, name)}")


def token_similarity(q: torch.Tensor, p: torch.Tensor, similarity: str) -> torch.Tensor:
    """Token-pair similarities: q [..., Lq, d] x p [..., Lp, d] -> [..., Lq, Lp]."""
    dots = q @ p.transpose(-1, -2)
    if similarity == "cosine":
        return dots
    if similarity == "l2":
        q2 = (q * q).sum(-1).unsqueeze(-1)
        p2 = (p * p).sum(-1).unsqueeze(-2)
        return -(q2 + p2 - 2.0 * dots)
    raise ValueError(f"unknown similarity {similarity!r}; expected one of {LI_SIMILARITIES}")


def _reduce_maxsim(sim: torch.Tensor, q_mask: torch.Tensor, p_mask: torch.Tensor) -> torch.Tensor:
    """sim [..., Lq, Lp] with masks broadcastable to [..., Lq] and [..., Lp] -> [...]."""
    p_valid = p_mask.bool().unsqueeze(-2)
    floor = torch.finfo(sim.dtype).min
    best = sim.masked_fill(~p_valid, floor).amax(-1)
    # A passage with no valid token contributes nothing rather than -inf.
    best = torch.where(p_valid.any(-1), best, torch.zeros_like(best))
    return (best * q_mask.to(best.dtype)).sum(-1)


def maxsim(q_tokens: torch.Tensor, q_mask: torch.Tensor, p_tokens: torch.Tensor,
           p_mask: torch.Tensor, similarity: str = "cosine") -> torch.Tensor:
    """Aligned MaxSim: query b against passage b.

    q_tokens [B, Lq, d], q_mask [B, Lq], p_tokens [B, Lp, d], p_mask [B, Lp] -> [B].
    score_b = sum_i q_mask[b, i] * max_{j: p_mask[b, j]} sim(q_b,i, p_b,j).
    """
    sim = token_similarity(q_tokens, p_tokens, similarity)
    return _reduce_maxsim(sim, q_mask, p_mask)


def maxsim_matrix(q_tokens: torch.Tensor, q_mask: torch.Tensor, p_tokens: torch.Tensor,
                  p_mask: torch.Tensor, similarity: str = "cosine") -> torch.Tensor:
    """All-pairs MaxSim (every query against every passage, for in-batch losses): [Bq, Bp]."""
    sim = token_similarity(q_tokens[:, None], p_tokens[None], similarity)  # [Bq, Bp, Lq, Lp]
    return _reduce_maxsim(sim, q_mask[:, None, :], p_mask[None, :, :])


class LateInteractionEncoder(nn.Module):
    """ColBERT-style encoder: `score(q, p) = MaxSim(E(q), E(p))` over normalised token vectors."""

    def __init__(self, encoder: nn.Module, tokenizer, options: LateInteractionOptions,
                 projection: nn.Linear | None = None):
        super().__init__()
        options.validate()
        if (projection is None) != (options.projection_dim is None):
            raise ConfigError("projection_dim", "a projection layer is needed exactly when "
                                                "projection_dim is set")
        self.options = options
        self.encoder = encoder
        self.projection = projection
        self.tokenizer = tokenizer
        self._punctuation_ids = self._punctuation_token_ids(tokenizer)

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, trust_remote_code: bool = False,
                        num_layers: int | None = None, **overrides) -> LateInteractionEncoder:
        """Load a saved late-interaction folder or start from any HF encoder.

        Options: defaults < the folder's saved options < keyword `overrides` (None is ignored).
        A projection is read from the folder when saved there; a new one (when `projection_dim`
        is set on a plain encoder) is initialised from a fixed seed so that two loads of the
        same folder score identically. `num_layers` keeps the encoder's first layers (a saved
        folder's config already records its depth).
        """
        root = Path(path)
        values = asdict(LateInteractionOptions())
        saved = root / OPTIONS_FILE
        if saved.exists():
            values.update(json.loads(saved.read_text()))
        unknown = set(overrides) - set(values)
        if unknown:
            raise ConfigError(sorted(unknown)[0], f"unknown late-interaction option; known: "
                                                  f"{sorted(values)}")
        saved_dim = values["projection_dim"] if (root / PROJECTION_FILE).exists() else None
        values.update({k: v for k, v in overrides.items() if v is not None})
        options = LateInteractionOptions(**values)
        options.validate()
        if saved_dim is not None and options.projection_dim != saved_dim:
            raise ConfigError("projection_dim", f"{path} holds a projection to {saved_dim} "
                                                f"dimensions, not {options.projection_dim}")
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        if num_layers is not None:
            from raykd.students.bi_encoder import _load_tower

            encoder = _load_tower(path, num_layers, trust_remote_code)
        else:
            encoder = AutoModel.from_pretrained(path, trust_remote_code=trust_remote_code)
        projection = None
        if options.projection_dim is not None:
            hidden = int(encoder.config.hidden_size)
            projection = nn.Linear(hidden, options.projection_dim, bias=False)
            if saved_dim is not None:
                from safetensors.torch import load_file

                weight = load_file(str(root / PROJECTION_FILE))["weight"]
                if tuple(weight.shape) != (options.projection_dim, hidden):
                    raise ConfigError("projection_dim", f"saved projection has shape "
                                                        f"{tuple(weight.shape)}, expected "
                                                        f"{(options.projection_dim, hidden)}")
            else:
                generator = torch.Generator().manual_seed(PROJECTION_SEED)
                bound = 1.0 / hidden ** 0.5  # nn.Linear's default range
                weight = (torch.rand(options.projection_dim, hidden, generator=generator) * 2 - 1)
                weight = weight * bound
            with torch.no_grad():
                projection.weight.copy_(weight)
        return cls(encoder, tokenizer, options, projection)

    @staticmethod
    def _punctuation_token_ids(tokenizer) -> list[int]:
        ids = set()
        for symbol in string.punctuation:
            pieces = tokenizer.encode(symbol, add_special_tokens=False)
            if len(pieces) == 1:
                ids.add(int(pieces[0]))
        return sorted(ids)

    @property
    def dim(self) -> int:
        if self.options.projection_dim is not None:
            return int(self.options.projection_dim)
        return int(self.encoder.config.hidden_size)

    # ---- tokenisation -------------------------------------------------------------------

    def tokenize_queries(self, texts: Sequence[str]) -> dict:
        """Query inputs; with query augmentation, padding becomes attended [MASK] tokens."""
        max_length = self.options.query_max_length
        if not self.options.query_augmentation:
            return self.tokenizer(list(texts), padding=True, truncation=True,
                                  max_length=max_length, return_tensors="pt")
        mask_id = self.tokenizer.mask_token_id
        if mask_id is None:
            raise ConfigError("query_augmentation", "the tokenizer has no [MASK] token")
        batch = self.tokenizer(list(texts), padding="max_length", truncation=True,
                               max_length=max_length, return_tensors="pt")
        padded = batch["attention_mask"] == 0
        batch["input_ids"] = batch["input_ids"].masked_fill(padded, mask_id)
        batch["attention_mask"] = torch.ones_like(batch["attention_mask"])
        return batch

    def tokenize(self, texts: Sequence[str], side: Literal["query", "passage"]) -> dict:
        """`tokenize_queries` or `tokenize_passages` (the bi-encoder's signature)."""
        return self.tokenize_queries(texts) if side == "query" else self.tokenize_passages(texts)

    def tokenize_passages(self, texts: Sequence[str]) -> dict:
        return self.tokenizer(list(texts), padding=True, truncation=True,
                              max_length=self.options.passage_max_length, return_tensors="pt")

    # ---- embedding (with gradients) -----------------------------------------------------

    def _embed(self, inputs: dict) -> torch.Tensor:
        keep = ("input_ids", "attention_mask", "token_type_ids")
        hidden = self.encoder(**{k: v for k, v in inputs.items() if k in keep}).last_hidden_state
        if self.projection is not None:
            hidden = self.projection(hidden)
        return F.normalize(hidden, p=2, dim=-1)

    def embed_queries(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens [B, Lq, d], mask [B, Lq] bool) of tokenised queries."""
        return self._embed(inputs), inputs["attention_mask"].bool()

    def embed_passages(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens [B, Lp, d], mask [B, Lp] bool); padding (and optionally punctuation) is False."""
        mask = inputs["attention_mask"].bool()
        if self.options.mask_punctuation and self._punctuation_ids:
            punct = torch.tensor(self._punctuation_ids, device=inputs["input_ids"].device)
            mask = mask & ~torch.isin(inputs["input_ids"], punct)
        return self._embed(inputs), mask

    def forward(self, query_inputs: dict, passage_inputs: dict):
        """((q_tokens, q_mask), (p_tokens, p_mask)) in one call."""
        return self.embed_queries(query_inputs), self.embed_passages(passage_inputs)

    # ---- scoring ------------------------------------------------------------------------

    def maxsim(self, q_tokens, q_mask, p_tokens, p_mask) -> torch.Tensor:
        """Aligned MaxSim [B] with this model's similarity."""
        return maxsim(q_tokens, q_mask, p_tokens, p_mask, self.options.similarity)

    def maxsim_matrix(self, q_tokens, q_mask, p_tokens, p_mask) -> torch.Tensor:
        """All-pairs MaxSim [Bq, Bp] with this model's similarity."""
        return maxsim_matrix(q_tokens, q_mask, p_tokens, p_mask, self.options.similarity)

    # ---- saving -------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """An HF folder (AutoModel loads the encoder) + the projection + the options json."""
        from safetensors.torch import save_file

        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(root)
        self.tokenizer.save_pretrained(root)
        if self.projection is not None:
            save_file({"weight": self.projection.weight.detach().cpu().contiguous()},
                      str(root / PROJECTION_FILE))
        (root / OPTIONS_FILE).write_text(json.dumps(asdict(self.options), indent=2) + "\n")
        return root
