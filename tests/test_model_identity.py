"""The embedded model's identity (part of every stored answer's key) and the cached file digest.

Real files on disk, no model loaded: the identity is computed before llama.cpp is touched.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from selfinstruct.config import BackendConfig
from selfinstruct.models.digest import DIGESTS_FILE, file_sha256
from selfinstruct.models.files import model_fingerprint
from selfinstruct.runtimes.embedded import embedded_identity

SIZE = 2 * 1024 * 1024
# The sampled fingerprint reads 16 x 64 KiB at i * size / 16; this byte lies between two samples.
UNSAMPLED_OFFSET = 64 * 1024 + 100


def model_file(folder: Path, patch: bytes = b"") -> Path:
    """A stand-in GGUF of SIZE bytes, named like the real one, optionally edited in one place."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.gguf"
    data = bytearray(bytes(range(256)) * (SIZE // 256))
    data[UNSAMPLED_OFFSET : UNSAMPLED_OFFSET + len(patch)] = patch
    path.write_bytes(bytes(data))
    return path


def test_a_model_edited_where_the_old_fingerprint_does_not_look_gets_its_own_identity(tmp_path: Path) -> None:
    original = model_file(tmp_path / "a")
    edited = model_file(tmp_path / "b", patch=b"fine-tuned")
    # Same name, same size, same sampled bytes: the old identity could not tell them apart.
    assert model_fingerprint(original) == model_fingerprint(edited)
    config = BackendConfig()
    cache = tmp_path / "cache"
    assert embedded_identity(original, config, cache) != embedded_identity(edited, config, cache)


def test_the_identity_names_n_ctx_which_can_lower_max_tokens(tmp_path: Path) -> None:
    path = model_file(tmp_path / "m")
    small = embedded_identity(path, BackendConfig(n_ctx=2048), tmp_path)
    large = embedded_identity(path, BackendConfig(n_ctx=4096), tmp_path)
    assert small["n_ctx"] == 2048 and small != large


def test_the_identity_does_not_depend_on_where_the_file_lives(tmp_path: Path) -> None:
    here, there = model_file(tmp_path / "here"), model_file(tmp_path / "there")
    config = BackendConfig()
    identity = embedded_identity(here, config, tmp_path)
    assert identity == embedded_identity(there, config, tmp_path)
    assert str(tmp_path) not in json.dumps(identity)


def test_the_tiled_kernel_turned_back_on_is_part_of_the_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GGML_CPU_TILED_MM=1 gives other logits in calls of 8 or more rows: those answers get keys
    # of their own. Unset and "0" (what runtimes/llama_context.py sets) are the same identity.
    path, config = model_file(tmp_path / "m"), BackendConfig()
    monkeypatch.delenv("GGML_CPU_TILED_MM", raising=False)
    unset = embedded_identity(path, config, tmp_path)
    monkeypatch.setenv("GGML_CPU_TILED_MM", "0")
    assert embedded_identity(path, config, tmp_path) == unset and "tiled_mm" not in unset
    monkeypatch.setenv("GGML_CPU_TILED_MM", "1")
    assert embedded_identity(path, config, tmp_path) == {**unset, "tiled_mm": True}


def test_the_digest_is_computed_once_per_path_size_and_mtime(tmp_path: Path) -> None:
    path = model_file(tmp_path / "m")
    cache = tmp_path / "cache"
    first = file_sha256(path, cache)
    entry = json.loads((cache / DIGESTS_FILE).read_text())[str(path.resolve())]
    assert entry["sha256"] == first and entry["size"] == SIZE
    # Rewritten in place with its old mtime put back: the cached digest is trusted, which
    # shows the file is not read again...
    stat = path.stat()
    model_file(tmp_path / "m", patch=b"changed")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_sha256(path, cache) == first
    # ...and a new mtime (what any real write leaves) means a new digest.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert file_sha256(path, cache) != first


@pytest.mark.parametrize("damage", ["{not json", "[1, 2]", '{"x": {"sha256": 3}}'])
def test_a_damaged_digest_cache_is_rebuilt(tmp_path: Path, damage: str) -> None:
    path = model_file(tmp_path / "m")
    expected = file_sha256(path, tmp_path / "clean")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / DIGESTS_FILE).write_text(damage)
    assert file_sha256(path, cache) == expected
    assert json.loads((cache / DIGESTS_FILE).read_text())[str(path.resolve())]["sha256"] == expected


def test_an_unwritable_cache_dir_still_gives_the_digest(tmp_path: Path) -> None:
    path = model_file(tmp_path / "m")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert file_sha256(path, blocker / "cache") == file_sha256(path, tmp_path / "ok")
