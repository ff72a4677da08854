"""How long `detect` takes on a 70B-parameter checkpoint layout (LLaMA-2-70B shapes), without the weights.

Two layouts are timed: a *.index.json only, and 29 safetensors shards whose headers are real and whose data
regions are sparse files (detect reads headers only). Prints absolute times and the ratio to a 1 s budget.
Run: python benchmarks/bench_detect.py
"""
import json
import platform
import struct
import tempfile
import time
from pathlib import Path

from adapterkit.arch.detect import detect

CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "num_hidden_layers": 80, "hidden_size": 8192,
          "intermediate_size": 28672, "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 32000,
          "rms_norm_eps": 1e-5, "tie_word_embeddings": False}


def llama70b_shapes():
    h, i, kv = 8192, 28672, 1024
    shapes = {"model.embed_tokens.weight": [32000, h], "model.norm.weight": [h], "lm_head.weight": [32000, h]}
    for layer in range(80):
        p = f"model.layers.{layer}."
        shapes.update({p + "self_attn.q_proj.weight": [h, h], p + "self_attn.k_proj.weight": [kv, h],
                       p + "self_attn.v_proj.weight": [kv, h], p + "self_attn.o_proj.weight": [h, h],
                       p + "mlp.gate_proj.weight": [i, h], p + "mlp.up_proj.weight": [i, h],
                       p + "mlp.down_proj.weight": [h, i], p + "input_layernorm.weight": [h],
                       p + "post_attention_layernorm.weight": [h]})
    return shapes


def write_sparse_shards(directory: Path, shapes: dict, n_shards: int = 29):
    names = list(shapes)
    for s in range(n_shards):
        chunk, offset, header = names[s::n_shards], 0, {}
        for name in chunk:
            size = 2
            for d in shapes[name]:
                size *= d
            header[name] = {"dtype": "BF16", "shape": shapes[name], "data_offsets": [offset, offset + size]}
            offset += size
        blob = json.dumps(header).encode()
        path = directory / f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        with open(path, "wb") as handle:
            handle.write(struct.pack("<Q", len(blob)) + blob)
            handle.truncate(8 + len(blob) + offset)  # sparse: no bytes written for the weights


def timed(path, repeats=5):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        detect(path, method="MEMIT")
        best = min(best, time.perf_counter() - start)
    return best


def main():
    shapes = llama70b_shapes()
    params = sum(eval("*".join(map(str, s))) for s in shapes.values())
    with tempfile.TemporaryDirectory() as tmp:
        index_dir, shard_dir = Path(tmp, "index"), Path(tmp, "shards")
        index_dir.mkdir(), shard_dir.mkdir()
        for d in (index_dir, shard_dir):
            (d / "config.json").write_text(json.dumps(CONFIG))
        weight_map = {n: "model-00001-of-00029.safetensors" for n in shapes}
        (index_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
        write_sparse_shards(shard_dir, shapes)
        detect(index_dir)  # warm the registry and imports
        print(f"device: CPU ({platform.processor() or platform.machine()}), {params / 1e9:.1f}B parameters, {len(shapes)} tensors")
        for label, path in (("index.json only", index_dir), ("29 safetensors headers", shard_dir)):
            seconds = timed(path)
            print(f"detect on {label:<24} {seconds * 1000:8.1f} ms   ({seconds / 1.0:.3f} of the 1 s budget)")


if __name__ == "__main__":
    main()
