"""LoRA adapters for llama.cpp: a peft adapter written as a GGUF adapter, or merged into a GGUF model.

`selfinstruct finetune` trains a peft LoRA on the Hugging Face form of a model; the embedded
backend runs the GGUF form through llama.cpp. The two name the same weights differently
(`model.layers.3.self_attn.q_proj` is `blk.3.attn_q`), and llama.cpp reads an adapter as a
GGUF file of its own: `general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`,
and for each adapted weight a pair `<name>.lora_a` (rank x in) and `<name>.lora_b`
(out x rank). It adds `scale * alpha / rank * B @ A` to the weight, so the GGUF alpha is
chosen to give peft's scaling (alpha / rank, or alpha / sqrt(rank) with rsLoRA).

Only architectures whose GGUF conversion renames the attention weights without changing
them are accepted (the Gemma and Qwen families). llama.cpp's converter permutes the rows of
Llama's q and k projections, which a LoRA's B would need too; rather than guess, those
are refused with one line.

Numpy, safetensors and the `gguf` package only: converting needs no torch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from selfinstruct.errors import ConfigError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Hugging Face `model_type` -> llama.cpp architecture, where the conversion only renames.
ARCH_OF_MODEL_TYPE = {
    "gemma": "gemma",
    "gemma2": "gemma2",
    "gemma3": "gemma3",
    "gemma3_text": "gemma3",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
}
_PEFT_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<half>[AB])\.weight$")


@dataclass(frozen=True)
class LoraWeights:
    """A LoRA in llama.cpp's terms: GGUF weight name -> (A, B), and its alpha for llama.cpp."""

    arch: str
    rank: int
    alpha: float
    pairs: dict[str, tuple[np.ndarray, np.ndarray]]

    @property
    def scaling(self) -> float:
        """What B @ A is multiplied by before it is added to the weight."""
        return self.alpha / self.rank


def is_peft_adapter(path: Path) -> bool:
    return path.is_dir() and (path / ADAPTER_CONFIG).is_file()


def arch_of_hf_model(model_dir: Path) -> tuple[str, int]:
    """(llama.cpp architecture, layer count) of a Hugging Face model directory (from config.json)."""
    try:
        config = json.loads((model_dir / "config.json").read_text("utf-8"))
        text = config.get("text_config") or config  # multimodal configs keep the LM's settings apart
        model_type, n_blocks = config["model_type"], int(text["num_hidden_layers"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{model_dir}: cannot read the model type and layers from config.json ({exc})"
        ) from None
    return arch_of_model_type(model_type), n_blocks


def arch_of_model_type(model_type: str) -> str:
    if model_type not in ARCH_OF_MODEL_TYPE:
        raise ConfigError(
            f"no GGUF adapter for model type {model_type!r}: supported are "
            f"{', '.join(sorted(ARCH_OF_MODEL_TYPE))} (the peft adapter itself is unaffected)"
        )
    return ARCH_OF_MODEL_TYPE[model_type]


def read_peft_adapter(adapter_dir: Path, arch: str, n_blocks: int) -> LoraWeights:
    """A peft LoRA directory's weights under the GGUF names of `arch` (a model of n_blocks layers)."""
    import gguf
    from safetensors.numpy import load_file

    if not is_peft_adapter(adapter_dir):
        raise ConfigError(f"{adapter_dir}: not a LoRA adapter directory (no {ADAPTER_CONFIG})")
    config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text("utf-8"))
    problem = _unsupported(config)
    if problem:
        raise ConfigError(f"{adapter_dir}: {problem}; it cannot be written as a GGUF adapter")
    arch_enum = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}.get(arch)
    if arch_enum is None:
        raise ConfigError(f"unknown llama.cpp architecture {arch!r}")
    names = gguf.get_tensor_name_map(arch_enum, n_blocks)
    try:
        tensors = load_file(str(adapter_dir / ADAPTER_WEIGHTS))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{adapter_dir / ADAPTER_WEIGHTS}: cannot read the adapter weights ({exc})"
        ) from None
    halves: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        match = _PEFT_KEY.match(key)
        if match is None:
            raise ConfigError(f"{adapter_dir}: unexpected tensor {key} (only LoRA A/B weights are supported)")
        module = match["module"]
        gguf_name = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if gguf_name is None:
            raise ConfigError(f"{adapter_dir}: {module} has no GGUF name in architecture {arch}")
        halves.setdefault(gguf_name, {})[match["half"]] = value.astype(np.float32)
    pairs = {}
    for name, half in sorted(halves.items()):
        if set(half) != {"A", "B"}:
            raise ConfigError(f"{adapter_dir}: {name} has only lora_{''.join(half)}")
        pairs[name] = (half["A"], half["B"])
    rank = int(config["r"])
    alpha = float(config["lora_alpha"])
    # llama.cpp always divides by the rank; rsLoRA divides by its square root.
    gguf_alpha = alpha * rank**0.5 if config.get("use_rslora") else alpha
    return LoraWeights(arch=arch, rank=rank, alpha=gguf_alpha, pairs=pairs)


def _unsupported(config: dict[str, Any]) -> str | None:
    if config.get("peft_type", "LORA") != "LORA":
        return f"peft type {config.get('peft_type')} is not LoRA"
    if config.get("use_dora"):
        return "DoRA adapters are not supported by llama.cpp"
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        return "per-module ranks or alphas are not supported"
    if config.get("modules_to_save"):
        return "modules_to_save (fully trained layers) cannot go into an adapter"
    return None


def write_lora_gguf(weights: LoraWeights, out: Path, name: str = "selfinstruct LoRA") -> Path:
    """Write `weights` as a llama.cpp LoRA adapter, whole or not at all."""
    import gguf

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    writer = gguf.GGUFWriter(partial, weights.arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_name(name)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, weights.alpha)
    for base_name, (a, b) in weights.pairs.items():
        stem = base_name.removesuffix(".weight")
        writer.add_tensor(f"{stem}.weight.lora_a", np.ascontiguousarray(a, np.float32))
        writer.add_tensor(f"{stem}.weight.lora_b", np.ascontiguousarray(b, np.float32))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    partial.replace(out)
    return out


def gguf_model_shape(model: Path) -> tuple[str, int]:
    """(architecture, block count) of a GGUF model file, read from the start of its header.

    gguf.GGUFReader parses every field, including the 262K-entry vocabulary (12 s for the
    packaged Gemma); these two keys come before it, so the header is read only that far.
    """
    arch: str | None = None
    with model.open("rb") as handle:
        for key, value in _header_fields(handle):
            if key == "general.architecture":
                arch = str(value)
            elif arch is not None and key == f"{arch}.block_count":
                return arch, int(value)  # type: ignore[call-overload]
    raise ConfigError(f"{model}: no architecture or block count in its GGUF header")


# GGUF value types: fixed-size scalars by struct format; 8 = string, 9 = array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def _header_fields(handle: Any) -> Iterator[tuple[str, object]]:
    """(key, value) of a GGUF file's metadata in order; arrays are skipped (value None)."""
    import struct

    def read(fmt: str) -> Any:
        size = struct.calcsize("<" + fmt)
        data = handle.read(size)
        if len(data) != size:
            raise ConfigError(f"{handle.name}: the GGUF header ends early")
        return struct.unpack("<" + fmt, data)[0]

    def string() -> str:
        return handle.read(read("Q")).decode("utf-8", "replace")

    def value(kind: int) -> object:
        if kind in _SCALARS:
            return read(_SCALARS[kind])
        if kind == 8:
            return string()
        if kind == 9:
            item_kind, count = read("I"), read("Q")
            if item_kind in _SCALARS:
                handle.seek(count * struct.calcsize("<" + _SCALARS[item_kind]), 1)
            else:
                for _ in range(count):
                    value(item_kind)
            return None
        raise ConfigError(f"{handle.name}: unknown GGUF value type {kind}")

    if handle.read(4) != b"GGUF":
        raise ConfigError(f"{handle.name}: not a GGUF file")
    read("I")  # version
    read("Q")  # tensor count
    for _ in range(read("Q")):
        key = string()
        yield key, value(read("I"))


def adapter_for_hf_base(adapter_dir: Path, base_dir: Path, out: Path) -> Path:
    """Write the peft adapter as a GGUF adapter for the GGUF conversion of the HF model `base_dir`."""
    arch, n_blocks = arch_of_hf_model(base_dir)
    return write_lora_gguf(read_peft_adapter(adapter_dir, arch, n_blocks), out)


def adapter_for_model(adapter_dir: Path, model: Path, out: Path) -> Path:
    """Write the peft adapter in `adapter_dir` as a GGUF adapter for the GGUF `model`."""
    arch, n_blocks = gguf_model_shape(model)
    return write_lora_gguf(read_peft_adapter(adapter_dir, arch, n_blocks), out)


def merge_into_gguf(model: Path, weights: LoraWeights, out: Path, name: str | None = None) -> Path:
    """A copy of the GGUF `model` with the LoRA folded into its weights, whole or not at all.

    Every other tensor and all metadata are copied byte for byte (quantized as they were);
    each adapted weight is dequantized, has scaling * B @ A added, and is stored as F16.
    """
    import gguf

    reader = gguf.GGUFReader(model)
    arch = str(reader.fields["general.architecture"].contents())
    if arch != weights.arch:
        raise ConfigError(f"the adapter is for {weights.arch}, the model {model} is {arch}")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    writer = gguf.GGUFWriter(partial, arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue  # the writer sets these itself
        value = name if key == "general.name" and name else field.contents()
        sub_type = field.types[1] if len(field.types) > 1 else None
        writer.add_key_value(key, value, field.types[0], sub_type=sub_type)
    merged: dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        if tensor.name not in weights.pairs:
            continue
        a, b = weights.pairs[tensor.name]
        base = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(b.shape[0], a.shape[1])
        merged[tensor.name] = (base + weights.scaling * (b @ a)).astype(np.float16)
    missing = sorted(set(weights.pairs) - set(merged))
    if missing:
        raise ConfigError(f"{model} has no tensor {missing[0]} (is the adapter for another model?)")
    for tensor in reader.tensors:
        if tensor.name in merged:
            data = merged[tensor.name]
            writer.add_tensor_info(
                tensor.name, data.shape, data.dtype, data.nbytes, gguf.GGMLQuantizationType.F16
            )
        else:
            data = tensor.data
            writer.add_tensor_info(tensor.name, data.shape, data.dtype, data.nbytes, tensor.tensor_type)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for tensor in reader.tensors:
            writer.write_tensor_data(merged.get(tensor.name, tensor.data))
    finally:
        writer.close()
    partial.replace(out)
    return out
