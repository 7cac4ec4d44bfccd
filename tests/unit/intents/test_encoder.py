"""The sentence encoder: quantised once into its cache directory, and still there when that
directory cannot be written."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from orchestrator_flows.intents.encoder import SentenceEncoder


def test_the_int8_model_is_made_once_in_the_cache_directory(tmp_path: Path) -> None:
    first = SentenceEncoder(tmp_path)
    made = sorted(tmp_path.iterdir())
    stamps = [path.stat().st_mtime_ns for path in made]

    again = SentenceEncoder(tmp_path)

    assert [path.name for path in made] == [p.name for p in sorted(tmp_path.iterdir())]
    assert len(made) == 1 and made[0].name.endswith(".int8.onnx")
    assert [path.stat().st_mtime_ns for path in made] == stamps  # read, not made again
    assert np.array_equal(first.encode("where is my card"), again.encode("where is my card"))


def test_a_cache_directory_that_cannot_be_made_still_gives_an_encoder(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")

    encoder = SentenceEncoder(blocked / "models")

    vector = encoder.encode("I want a refund")
    assert vector.shape == (384,)
    assert abs(float(np.linalg.norm(vector)) - 1) < 1e-5
