"""Character n-gram TF-IDF + logistic regression: the simplest honest baseline (`model: tfidf`).

Saved without pickles: the vocabulary and idf as JSON, the coefficients as safetensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from erckit.atomic import write_safetensors, write_text_atomic
from erckit.config import TfidfConfig
from erckit.data import DataError, Dialogue, iter_utterances
from erckit.formats.encoding import check_file, read_json
from erckit.labels import LABELS
from erckit.progress import bar

CHUNK = 4096  # utterances scored at once (the predict bar moves between chunks)
VOCABULARY = "tfidf.json"  # the vectorizer's settings and vocabulary
WEIGHTS = "tfidf.safetensors"  # idf and the logistic regression's coefficients


class TfidfClassifier:
    """Utterance-level classifier on character n-grams."""

    def __init__(self, vectorizer: TfidfVectorizer, model: LogisticRegression) -> None:
        self.vectorizer = vectorizer
        self.model = model

    @classmethod
    def train(cls, dialogues: list[Dialogue], config: TfidfConfig, seed: int = 0) -> TfidfClassifier:
        texts = [u.text for u in iter_utterances(dialogues)]
        labels = [LABELS.index(u.label) for u in iter_utterances(dialogues)]
        vectorizer = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(config.ngram_min, config.ngram_max),
            max_features=config.max_features, sublinear_tf=True,
        )
        features = vectorizer.fit_transform(texts)
        model = LogisticRegression(
            C=config.c, class_weight="balanced" if config.balanced else None, max_iter=2000, random_state=seed
        )
        model.fit(features, labels)
        return cls(vectorizer, model)

    def probabilities(self, dialogues: list[Dialogue], *, progress: bool = False) -> np.ndarray:
        """[utterances, 7] label probabilities, in file order (CHUNK utterances at a time, for the bar)."""
        texts = [u.text for u in iter_utterances(dialogues)]
        probs = np.zeros((len(texts), len(LABELS)))
        with bar(len(texts), "predict", show=progress) as shown:
            for start in range(0, len(texts), CHUNK):
                features = self.vectorizer.transform(texts[start : start + CHUNK])
                probs[start : start + CHUNK, self.model.classes_] = self.model.predict_proba(features)
                shown.update(features.shape[0])
        return probs

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        vocabulary = {term: int(index) for term, index in self.vectorizer.vocabulary_.items()}
        params = self.vectorizer.get_params()
        settings = {k: params[k] for k in ("analyzer", "ngram_range", "sublinear_tf")}
        write_text_atomic(folder / VOCABULARY, json.dumps({"settings": settings, "vocabulary": vocabulary}, ensure_ascii=False))
        tensors = {
            "idf": self.vectorizer.idf_,
            "coef": self.model.coef_,
            "intercept": self.model.intercept_,
            "classes": self.model.classes_.astype(np.int64),
        }
        arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
        write_safetensors(save_file, arrays, folder / WEIGHTS)

    @classmethod
    def load(cls, folder: Path) -> TfidfClassifier:
        saved = read_json(folder / VOCABULARY)
        settings = saved.get("settings") if isinstance(saved, dict) else None
        if not isinstance(settings, dict) or not isinstance(saved.get("vocabulary"), dict):
            raise DataError(folder / VOCABULARY, None, 'expected an object with "settings" and "vocabulary"')
        vectorizer = TfidfVectorizer(
            analyzer=settings["analyzer"], ngram_range=tuple(settings["ngram_range"]),
            sublinear_tf=settings["sublinear_tf"], vocabulary=saved["vocabulary"],
        )
        check_file(folder / WEIGHTS)
        try:
            tensors = load_file(str(folder / WEIGHTS))
        except SafetensorError as err:
            raise DataError(folder / WEIGHTS, None, f"unreadable weights ({err}): retrain the model") from None
        vectorizer.idf_ = tensors["idf"]
        model = LogisticRegression()
        model.coef_, model.intercept_, model.classes_ = tensors["coef"], tensors["intercept"], tensors["classes"]
        return cls(vectorizer, model)
