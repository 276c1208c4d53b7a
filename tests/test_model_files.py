"""models.files: the packaged Gemma GGUF is assembled once into the cache dir, then reused."""

from __future__ import annotations

from pathlib import Path

import pytest
from servers.llama_server import cache_dir_for_tests, model_path_for_tests

from selfinstruct.models.files import MODEL_FILE_NAME, default_model_path, model_fingerprint

pytestmark = pytest.mark.model
MODEL_SIZE = 253_113_024


def test_assembles_into_the_cache_dir_then_repairs_a_damaged_file(tmp_path: Path) -> None:
    path = default_model_path(tmp_path)
    assert path == tmp_path / "models" / MODEL_FILE_NAME
    assert path.stat().st_size == MODEL_SIZE
    assert sorted(p.name for p in path.parent.iterdir()) == [MODEL_FILE_NAME, MODEL_FILE_NAME + ".ok"]
    # A file cut short later (disk full, a stray copy) is not trusted: it is assembled again.
    with path.open("r+b") as handle:
        handle.truncate(1000)
    assert default_model_path(tmp_path).stat().st_size == MODEL_SIZE
    assert not list(path.parent.glob("*.partial"))


def test_an_assembled_model_is_reused_without_rewriting(tmp_path: Path) -> None:
    path = model_path_for_tests()
    before = path.stat().st_mtime_ns
    assert default_model_path(cache_dir_for_tests()) == path
    assert path.stat().st_mtime_ns == before


def test_fingerprint_depends_on_content_not_name(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.gguf", tmp_path / "b.gguf", tmp_path / "c.gguf"
    a.write_bytes(b"x" * 300_000)
    b.write_bytes(b"x" * 300_000)
    c.write_bytes(b"x" * 299_999 + b"y")
    assert model_fingerprint(a) == model_fingerprint(b)
    assert model_fingerprint(a) != model_fingerprint(c)
