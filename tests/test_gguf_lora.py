"""peft LoRA -> llama.cpp GGUF adapter, and LoRA merged into a GGUF model (models/gguf_lora.py).

On small synthetic files: a peft-shaped adapter directory and a two-block "gemma3" GGUF
model with one F32 and one Q8_0 weight. The real model's round trip (llama.cpp against
peft) is in test_gguf_adapter_model.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

from selfinstruct.errors import ConfigError
from selfinstruct.models.gguf_lora import (
    adapter_for_hf_base,
    adapter_for_model,
    arch_of_model_type,
    merge_into_gguf,
    read_peft_adapter,
    write_lora_gguf,
)

HIDDEN, Q_OUT, KV_OUT, RANK = 32, 64, 32, 4
SHAPES = {
    "q_proj": (Q_OUT, HIDDEN),
    "k_proj": (KV_OUT, HIDDEN),
    "v_proj": (KV_OUT, HIDDEN),
    "o_proj": (HIDDEN, Q_OUT),
}
GGUF_NAMES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output"}


def make_adapter(folder: Path, blocks: int = 2, seed: int = 0, **config: object) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    tensors = {}
    for block in range(blocks):
        for module, (out, inp) in SHAPES.items():
            prefix = f"base_model.model.model.layers.{block}.self_attn.{module}"
            tensors[f"{prefix}.lora_A.weight"] = rng.normal(size=(RANK, inp)).astype(np.float32)
            tensors[f"{prefix}.lora_B.weight"] = rng.normal(size=(out, RANK)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    settings = {"peft_type": "LORA", "r": RANK, "lora_alpha": 8, "use_rslora": False, **config}
    (folder / "adapter_config.json").write_text(json.dumps(settings))
    return tensors


def make_model(path: Path, blocks: int = 2, seed: int = 1) -> dict[str, np.ndarray]:
    """A GGUF with the attention weights of `blocks` gemma3 layers; attn_k is Q8_0."""
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(path, "gemma3")
    writer.add_name("tiny")
    writer.add_block_count(blocks)
    writer.add_string("tokenizer.ggml.model", "llama")
    weights = {}
    for block in range(blocks):
        for module, shape in SHAPES.items():
            name = f"blk.{block}.{GGUF_NAMES[module]}.weight"
            weights[name] = rng.normal(size=shape).astype(np.float32)
            if module == "k_proj":
                quantized = gguf.quants.quantize(weights[name], gguf.GGMLQuantizationType.Q8_0)
                weights[name] = gguf.quants.dequantize(quantized, gguf.GGMLQuantizationType.Q8_0)
                writer.add_tensor(name, quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            else:
                writer.add_tensor(name, weights[name])
    writer.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return weights


def test_peft_names_become_llama_cpp_names_with_a_and_b_unchanged(tmp_path: Path) -> None:
    tensors = make_adapter(tmp_path / "adapter")
    weights = read_peft_adapter(tmp_path / "adapter", "gemma3", 2)
    assert sorted(weights.pairs) == sorted(
        f"blk.{b}.{n}.weight" for b in range(2) for n in GGUF_NAMES.values()
    )
    a, b = weights.pairs["blk.1.attn_output.weight"]
    prefix = "base_model.model.model.layers.1.self_attn.o_proj"
    np.testing.assert_array_equal(a, tensors[f"{prefix}.lora_A.weight"])
    np.testing.assert_array_equal(b, tensors[f"{prefix}.lora_B.weight"])
    assert weights.alpha == 8 and weights.scaling == 8 / RANK


def test_rslora_scaling_is_kept_through_llama_cpps_division_by_the_rank(tmp_path: Path) -> None:
    make_adapter(tmp_path / "adapter", use_rslora=True)
    weights = read_peft_adapter(tmp_path / "adapter", "gemma3", 2)
    assert weights.scaling == pytest.approx(8 / RANK**0.5)


def test_gguf_adapter_file_has_llama_cpps_adapter_keys_and_tensor_layout(tmp_path: Path) -> None:
    tensors = make_adapter(tmp_path / "adapter")
    out = write_lora_gguf(read_peft_adapter(tmp_path / "adapter", "gemma3", 2), tmp_path / "a.gguf")
    reader = gguf.GGUFReader(out)
    assert reader.fields["general.architecture"].contents() == "gemma3"
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == 8.0
    by_name = {t.name: t for t in reader.tensors}
    assert len(by_name) == 2 * 4 * 2
    lora_a = by_name["blk.0.attn_q.weight.lora_a"]
    lora_b = by_name["blk.0.attn_q.weight.lora_b"]
    # GGUF lists dimensions innermost first: A is (in, rank), B is (rank, out), as llama.cpp checks.
    assert list(lora_a.shape) == [HIDDEN, RANK] and list(lora_b.shape) == [RANK, Q_OUT]
    np.testing.assert_array_equal(
        lora_a.data, tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    )
    assert not list(tmp_path.glob(".*partial"))


def test_adapter_for_a_gguf_model_reads_architecture_and_blocks_from_the_model(tmp_path: Path) -> None:
    make_adapter(tmp_path / "adapter", blocks=3)
    make_model(tmp_path / "model.gguf", blocks=3)
    out = adapter_for_model(tmp_path / "adapter", tmp_path / "model.gguf", tmp_path / "a.gguf")
    assert "blk.2.attn_v.weight.lora_b" in {t.name for t in gguf.GGUFReader(out).tensors}


def test_adapter_for_a_hugging_face_base_reads_its_model_type(tmp_path: Path) -> None:
    make_adapter(tmp_path / "adapter")
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "gemma3_text", "num_hidden_layers": 2}))
    out = adapter_for_hf_base(tmp_path / "adapter", base, tmp_path / "a.gguf")
    assert gguf.GGUFReader(out).fields["general.architecture"].contents() == "gemma3"


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"use_dora": True}, "DoRA"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"rank_pattern": {"q_proj": 2}}, "per-module ranks"),
        ({"peft_type": "IA3"}, "not LoRA"),
    ],
)
def test_adapters_llama_cpp_cannot_apply_are_refused(
    tmp_path: Path, config: dict[str, object], needle: str
) -> None:
    make_adapter(tmp_path / "adapter", **config)
    with pytest.raises(ConfigError, match=needle):
        read_peft_adapter(tmp_path / "adapter", "gemma3", 2)


def test_llama_family_is_refused_because_its_conversion_permutes_q_and_k() -> None:
    with pytest.raises(ConfigError, match="no GGUF adapter for model type 'llama'"):
        arch_of_model_type("llama")


def test_an_adapter_with_a_lone_half_or_a_foreign_tensor_is_refused(tmp_path: Path) -> None:
    tensors = make_adapter(tmp_path / "adapter")
    del tensors["base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"]
    save_file(tensors, str(tmp_path / "adapter" / "adapter_model.safetensors"))
    with pytest.raises(ConfigError, match=r"blk\.0\.attn_v\.weight has only lora_A"):
        read_peft_adapter(tmp_path / "adapter", "gemma3", 2)
    tensors["base_model.model.lm_head.weight"] = np.zeros((2, 2), np.float32)
    save_file(tensors, str(tmp_path / "adapter" / "adapter_model.safetensors"))
    with pytest.raises(ConfigError, match="unexpected tensor"):
        read_peft_adapter(tmp_path / "adapter", "gemma3", 2)


def test_merged_model_adds_the_scaled_lora_product_and_copies_everything_else(tmp_path: Path) -> None:
    make_adapter(tmp_path / "adapter")
    base = make_model(tmp_path / "model.gguf")
    weights = read_peft_adapter(tmp_path / "adapter", "gemma3", 2)
    out = merge_into_gguf(tmp_path / "model.gguf", weights, tmp_path / "merged.gguf", name="tiny merged")
    reader = gguf.GGUFReader(out)
    assert reader.fields["general.name"].contents() == "tiny merged"
    assert reader.fields["gemma3.block_count"].contents() == 2
    by_name = {t.name: t for t in reader.tensors}
    for name, (a, b) in weights.pairs.items():  # the Q8_0 weight (attn_k) is dequantized first
        expected = base[name] + weights.scaling * (b @ a)
        assert by_name[name].tensor_type == gguf.GGMLQuantizationType.F16
        np.testing.assert_allclose(by_name[name].data.astype(np.float32), expected, rtol=2e-3, atol=2e-3)
    np.testing.assert_array_equal(by_name["output_norm.weight"].data, np.ones(HIDDEN, np.float32))


def test_merging_an_adapter_for_another_model_fails_without_writing(tmp_path: Path) -> None:
    make_adapter(tmp_path / "adapter", blocks=3)
    make_model(tmp_path / "model.gguf", blocks=2)
    weights = read_peft_adapter(tmp_path / "adapter", "gemma3", 3)
    with pytest.raises(ConfigError, match=r"has no tensor blk\.2"):
        merge_into_gguf(tmp_path / "model.gguf", weights, tmp_path / "merged.gguf")
    assert not (tmp_path / "merged.gguf").exists()
    assert not list(tmp_path.glob(".*partial"))


def test_model_shape_is_read_from_the_header_past_arrays_of_any_kind(tmp_path: Path) -> None:
    from selfinstruct.models.gguf_lora import gguf_model_shape

    writer = gguf.GGUFWriter(tmp_path / "m.gguf", "qwen2")
    writer.add_array("tokenizer.ggml.tokens", ["a", "bb", "ccc"])
    writer.add_array("tokenizer.ggml.scores", [0.5, 1.5, 2.5])
    writer.add_array("nested", [[1, 2], [3]])
    writer.add_uint32("qwen2.block_count", 7)
    writer.add_tensor("output_norm.weight", np.ones(4, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert gguf_model_shape(tmp_path / "m.gguf") == ("qwen2", 7)
    (tmp_path / "no.gguf").write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ConfigError, match="not a GGUF file"):
        gguf_model_shape(tmp_path / "no.gguf")
    (tmp_path / "short.gguf").write_bytes((tmp_path / "m.gguf").read_bytes()[:40])
    with pytest.raises(ConfigError, match="ends early"):
        gguf_model_shape(tmp_path / "short.gguf")
