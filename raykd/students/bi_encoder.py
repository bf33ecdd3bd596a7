"""A bi-encoder student over any Hugging Face encoder.

Queries and passages are encoded separately (one shared tower or two), pooled (CLS or mean) and
compared by dot product or cosine similarity times a scale. `save` writes a folder that
`transformers.AutoModel` and `sentence_transformers.SentenceTransformer` both load without raykd.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from raykd.errors import ConfigError

RAYKD_CONFIG = "raykd_student.json"
POOLINGS = ("mean", "cls")
SIMILARITIES = ("dot", "cosine")


@dataclass
class BiEncoderOptions:
    """How the student turns text into vectors and vectors into scores."""

    pooling: Literal["mean", "cls"] = "mean"
    similarity: Literal["dot", "cosine"] = "dot"
    scale: float = 1.0
    shared: bool = True
    num_layers: int | None = None
    query_max_length: int = 64
    passage_max_length: int = 256
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.pooling not in POOLINGS:
            raise ConfigError("student.pooling", f"{self.pooling!r} is not one of {POOLINGS}")
        if self.similarity not in SIMILARITIES:
            raise ConfigError("student.similarity", f"{self.similarity!r} is not one of {SIMILARITIES}")
        if not self.scale > 0:
            raise ConfigError("student.scale", f"must be > 0, got {self.scale}")
        if self.num_layers is not None and self.num_layers < 1:
            raise ConfigError("student.num_layers", f"must be >= 1, got {self.num_layers}")
        for name in ("query_max_length", "passage_max_length"):
            if getattr(self, name) < 2:
                raise ConfigError(f"student.{name}", f"must be >= 2, got {getattr(self, name)}")


def _sentence_transformers_defaults(path: Path) -> dict:
    """Pooling, normalisation and max length read from a sentence-transformers folder, if any."""
    found: dict = {}
    modules_file = path / "modules.json"
    if not modules_file.exists():
        return found
    for module in json.loads(modules_file.read_text()):
        kind = module["type"].rsplit(".", 1)[-1]
        if kind == "Pooling":
            cfg = json.loads((path / module["path"] / "config.json").read_text())
            if cfg.get("pooling_mode_cls_token") or cfg.get("pooling_mode") == "cls":
                found["pooling"] = "cls"
            elif cfg.get("pooling_mode_mean_tokens") or cfg.get("pooling_mode") == "mean":
                found["pooling"] = "mean"
        elif kind == "Normalize":
            found["similarity"] = "cosine"
    st_config = path / "sentence_bert_config.json"
    if st_config.exists():
        max_len = json.loads(st_config.read_text()).get("max_seq_length")
        if max_len:
            found["passage_max_length"] = int(max_len)
    return found


def _load_tower(path: str | Path, num_layers: int | None, trust_remote_code: bool) -> nn.Module:
    kwargs = {"trust_remote_code": trust_remote_code}
    if num_layers is not None:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        available = getattr(config, "num_hidden_layers", None)
        if available is not None and num_layers > available:
            raise ConfigError(
                "student.num_layers", f"{num_layers} exceeds the {available} layers of {path}"
            )
        config.num_hidden_layers = num_layers
        kwargs["config"] = config
    return AutoModel.from_pretrained(path, **kwargs)


class BiEncoder(nn.Module):
    """Dual encoder: `score(q, p) = scale * sim(pool(E_q(q)), pool(E_p(p)))`."""

    def __init__(self, query_encoder: nn.Module, passage_encoder: nn.Module | None, tokenizer,
                 options: BiEncoderOptions):
        super().__init__()
        options.validate()
        self.options = options
        self.query_encoder = query_encoder
        # `None` means the passage side shares the query tower's weights.
        self.passage_encoder = passage_encoder
        self.tokenizer = tokenizer

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def resolve_options(cls, path: str | os.PathLike, **overrides) -> BiEncoderOptions:
        """The options a load of `path` with `overrides` settles on (no weights are read)."""
        root = Path(path)
        values = asdict(BiEncoderOptions())
        if (root / RAYKD_CONFIG).exists():
            values.update(json.loads((root / RAYKD_CONFIG).read_text()))
        elif root.exists():
            values.update(_sentence_transformers_defaults(root))
        unknown = set(overrides) - set(values)
        if unknown:
            raise ConfigError(f"student.{sorted(unknown)[0]}",
                              f"unknown option; known: {sorted(values)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        options = BiEncoderOptions(**values)
        options.validate()
        return options

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, trust_remote_code: bool = False,
                        **overrides) -> BiEncoder:
        """Load a raykd student folder, a sentence-transformers folder or any HF encoder.

        Options come from (lowest to highest priority) the defaults, the folder's
        sentence-transformers config, its raykd config, and keyword `overrides`.
        """
        root = Path(path)
        options = cls.resolve_options(root, **overrides)
        saved_raykd = (root / RAYKD_CONFIG).exists()
        # A saved student is already truncated; only a fresh load applies `num_layers`.
        layers = None if saved_raykd and "num_layers" not in overrides else options.num_layers
        separate_on_disk = saved_raykd and (root / "query").is_dir()
        query_path = root / "query" if separate_on_disk else root
        tokenizer = AutoTokenizer.from_pretrained(query_path, trust_remote_code=trust_remote_code)
        query_encoder = _load_tower(query_path, layers, trust_remote_code)
        passage_encoder = None
        if separate_on_disk:
            passage_encoder = _load_tower(root / "passage", layers, trust_remote_code)
        elif not options.shared:
            passage_encoder = copy.deepcopy(query_encoder)
        return cls(query_encoder, passage_encoder, tokenizer, options)

    # ---- encoding -----------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return int(self.query_encoder.config.hidden_size)

    def tokenize(self, texts: Sequence[str], side: Literal["query", "passage"]) -> dict:
        max_length = (self.options.query_max_length if side == "query"
                      else self.options.passage_max_length)
        return self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt")

    def _tower(self, side: str) -> nn.Module:
        if side == "passage" and self.passage_encoder is not None:
            return self.passage_encoder
        return self.query_encoder

    def embed(self, inputs: dict, side: Literal["query", "passage"]) -> torch.Tensor:
        """Pooled (and, for cosine, L2-normalised) embeddings of tokenised inputs."""
        inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        hidden = self._tower(side)(**inputs).last_hidden_state
        if self.options.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if self.options.similarity == "cosine":
            pooled = F.normalize(pooled, p=2, dim=-1)
        return pooled

    def forward(self, query_inputs: dict, passage_inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Query and passage embeddings in one call (so DDP and DeepSpeed see one forward)."""
        return self.embed(query_inputs, "query"), self.embed(passage_inputs, "passage")

    def score(self, query_emb: torch.Tensor, passage_emb: torch.Tensor) -> torch.Tensor:
        """All-pairs scores [Q, P]; for per-query lists use `score_lists`."""
        return self.options.scale * query_emb @ passage_emb.T

    def score_lists(self, query_emb: torch.Tensor, passage_emb: torch.Tensor) -> torch.Tensor:
        """Scores of each query against its own list: [B, d] x [B, m, d] -> [B, m]."""
        return self.options.scale * torch.einsum("bd,bmd->bm", query_emb, passage_emb)

    @torch.no_grad()
    def encode(self, texts: Sequence[str], side: Literal["query", "passage"], batch_size: int = 64,
               device: str | torch.device | None = None) -> np.ndarray:
        """Encode texts to a float32 array [n, dim], batching by length for speed."""
        if device is not None:
            self.to(device)
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            batch = self.tokenize([texts[i] for i in idx], side)
            batch = {k: v.to(device) for k, v in batch.items()}
            out[idx] = self.embed(batch, side).float().cpu().numpy()
        self.train(was_training)
        return out

    def encode_queries(self, texts: Sequence[str], **kwargs) -> np.ndarray:
        return self.encode(texts, "query", **kwargs)

    def encode_passages(self, texts: Sequence[str], **kwargs) -> np.ndarray:
        return self.encode(texts, "passage", **kwargs)

    # ---- saving -------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write a folder loadable by raykd, `transformers.AutoModel` and sentence-transformers.

        Shared tower: the folder itself is an HF model and a sentence-transformers model.
        Separate towers: `query/` and `passage/` are HF models; the folder is a
        sentence-transformers model whose Router sends queries and documents to each tower.
        """
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        opts = self.options
        if self.passage_encoder is None:
            self._save_tower(self.query_encoder, root, opts.passage_max_length)
            first = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
        else:
            self._save_tower(self.query_encoder, root / "query", opts.query_max_length)
            self._save_tower(self.passage_encoder, root / "passage", opts.passage_max_length)
            router = {
                "types": {"query": "sentence_transformers.models.Transformer",
                          "passage": "sentence_transformers.models.Transformer"},
                "structure": {"query": ["query"], "document": ["passage"]},
                "parameters": {"default_route": "document", "allow_empty_key": True},
            }
            _write_json(root / "router_config.json", router)
            first = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Router"}
        modules = [first, {"idx": 1, "name": "1", "path": "1_Pooling",
                           "type": "sentence_transformers.models.Pooling"}]
        pooling = {
            "word_embedding_dimension": self.dim,
            "pooling_mode_cls_token": opts.pooling == "cls",
            "pooling_mode_mean_tokens": opts.pooling == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        }
        _write_json(root / "1_Pooling" / "config.json", pooling)
        if opts.similarity == "cosine":
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                            "type": "sentence_transformers.models.Normalize"})
            (root / "2_Normalize").mkdir(exist_ok=True)
        _write_json(root / "modules.json", modules)
        _write_json(root / "config_sentence_transformers.json", {
            "similarity_fn_name": opts.similarity, "prompts": {}, "default_prompt_name": None})
        saved = asdict(opts)
        saved["num_layers"] = int(self.query_encoder.config.num_hidden_layers)
        saved["shared"] = self.passage_encoder is None
        _write_json(root / RAYKD_CONFIG, saved)
        return root

    def _save_tower(self, encoder: nn.Module, path: Path, max_length: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        encoder.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        _write_json(path / "sentence_bert_config.json",
                    {"max_seq_length": max_length, "do_lower_case": False})


def set_serving_lengths(folder: str | Path, *, query_max_length: int | None = None,
                        passage_max_length: int | None = None) -> None:
    """Make a saved student's sentence-transformers config carry the lengths it was evaluated
    at, so that a plain `SentenceTransformer(folder)` encodes as raykd measured it. The raykd
    config keeps the training lengths (a further stage trains as this one did)."""
    root = Path(folder)
    towers = ({"query": query_max_length, "passage": passage_max_length}
              if (root / "query").is_dir() else {"": passage_max_length})
    for tower, length in towers.items():
        config = root / tower / "sentence_bert_config.json"
        if length is not None and config.exists():
            _write_json(config, {**json.loads(config.read_text()), "max_seq_length": int(length)})


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")
