#!/usr/bin/python3
"""Convert one attention layer of a Hugging Face checkpoint into an attnserve model folder.

    /usr/bin/python3 tools/hf_to_attnserve.py CHECKPOINT_DIR OUT_MODEL_DIR --layer N [--name NAME]

CHECKPOINT_DIR holds config.json and model.safetensors (or a sharded checkpoint:
model.safetensors.index.json and its shards). OUT_MODEL_DIR gets config.pbtxt (text-format
attnserve.v1.ModelConfig) and weights.safetensors (F32, default tensor names q_proj.weight, ...),
ready to be a sub-folder of `attnserve --model_repository=DIR`. The model's name is the folder's
name (the server requires that); --name, when given, must equal it.

Families, chosen by config.json "model_type":
  llama, mistral, qwen2  model.layers.N.self_attn.{q,k,v,o}_proj.weight (+ q/k/v bias when
                         present, o bias when present); RoPE half-split with rope_theta (default
                         10000), partial_rotary_factor → rotary_dim, rope_scaling of type linear,
                         dynamic, yarn or llama3.
  gpt2                   h.N.attn.c_attn / c_proj (Conv1D, y = x·W + b: split and transposed to
                         nn.Linear layout), learned positions from wpe.weight. An optional
                         "transformer." prefix is accepted.
  bert                   encoder.layer.N.attention.self.{query,key,value} and
                         attention.output.dense (nn.Linear layout), learned positions from
                         embeddings.position_embeddings.weight. An optional "bert." prefix is
                         accepted.

A learned table is added to the served layer's input (Encode/Attend semantics), as the original
model adds it to the embeddings before its first layer.

Needs only numpy. Exit status 1 with a message naming the problem (unknown model_type, a missing
tensor, a wrong shape, an unsupported dtype or rope_scaling).
"""
import argparse
import json
import os
import re
import struct
import sys

import numpy as np


class ConvertError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------------------------

class SafetensorsFile:
    """Lazy reader: the header at open, each tensor's bytes on demand."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ConvertError(f"{path}: not a safetensors file (shorter than 8 bytes)")
            (n,) = struct.unpack("<Q", raw)
            size = os.fstat(f.fileno()).st_size
            if n > size - 8:
                raise ConvertError(f"{path}: header length {n} exceeds the file size {size}")
            try:
                self.header = json.loads(f.read(n))
            except ValueError as e:
                raise ConvertError(f"{path}: bad safetensors header: {e}") from None
        self.data_start = 8 + n
        self.header.pop("__metadata__", None)

    def __contains__(self, name):
        return name in self.header

    def read(self, name):
        entry = self.header[name]
        dtype, shape = entry["dtype"], tuple(entry["shape"])
        begin, end = entry["data_offsets"]
        with open(self.path, "rb") as f:
            f.seek(self.data_start + begin)
            raw = f.read(end - begin)
        if len(raw) != end - begin:
            raise ConvertError(f"{self.path}: tensor {name!r} is cut short (file truncated?)")
        if dtype == "F32":
            a = np.frombuffer(raw, "<f4")
        elif dtype == "F16":
            a = np.frombuffer(raw, "<f2").astype(np.float32)
        elif dtype == "BF16":
            a = (np.frombuffer(raw, "<u2").astype("<u4") << 16).view("<f4")
        else:
            raise ConvertError(f"{self.path}: tensor {name!r} has dtype {dtype}; "
                               f"supported: F32, F16, BF16")
        if a.size != int(np.prod(shape, dtype=np.int64)):
            raise ConvertError(f"{self.path}: tensor {name!r}: {len(raw)} bytes do not hold "
                               f"shape {list(shape)} of {dtype}")
        return a.reshape(shape).astype(np.float32)


class Checkpoint:
    """model.safetensors, or the shards listed in model.safetensors.index.json."""

    def __init__(self, folder):
        self.folder = folder
        single = os.path.join(folder, "model.safetensors")
        index = os.path.join(folder, "model.safetensors.index.json")
        self.files = {}
        if os.path.isfile(single):
            st = SafetensorsFile(single)
            self.files[single] = st
            self.where = {name: st for name in st.header}
            self.describe = single
        elif os.path.isfile(index):
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
            self.where = {}
            for name, shard in weight_map.items():
                path = os.path.join(folder, shard)
                if path not in self.files:
                    self.files[path] = SafetensorsFile(path)
                self.where[name] = self.files[path]
            self.describe = index
        else:
            raise ConvertError(f"{folder}: neither model.safetensors nor "
                               f"model.safetensors.index.json found")

    def has(self, name):
        return name in self.where and name in self.where[name]

    def get(self, name, shape=None):
        if not self.has(name):
            raise ConvertError(f"tensor {name!r} not found in {self.describe}")
        a = self.where[name].read(name)
        if shape is not None and a.shape != tuple(shape):
            raise ConvertError(f"tensor {name!r} has shape {list(a.shape)}, expected "
                               f"{list(shape)}")
        return a


def safetensors_f32_bytes(tensors):
    """{name: float32 array} → safetensors bytes (F32, header space-padded to 8 bytes)."""
    header, chunks, offset = {}, [], 0
    for name, a in tensors.items():
        raw = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt", "converted_by": "attnserve hf_to_attnserve.py"}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


# ---------------------------------------------------------------------------------------------
# Families
# ---------------------------------------------------------------------------------------------

def _need(cfg, key):
    if cfg.get(key) is None:
        raise ConvertError(f"config.json lacks {key!r}")
    return cfg[key]


def _check_layer(cfg, layer, key):
    n = cfg.get(key)
    if n is not None and not 0 <= layer < n:
        raise ConvertError(f"--layer {layer} is out of range: the checkpoint has {n} layers "
                           f"({key})")


def _pick_prefix(ck, candidates, probe):
    """The first prefix under which `probe` exists (else the first, so errors name it)."""
    for p in candidates:
        if ck.has(p + probe):
            return p
    return candidates[0]


ROPE_SCALING_KEYS = {
    "linear": {"factor": "factor"},
    "dynamic": {"factor": "factor", "original_max_position_embeddings": "original_max_positions"},
    "yarn": {"factor": "factor", "original_max_position_embeddings": "original_max_positions",
             "beta_fast": "beta_fast", "beta_slow": "beta_slow",
             "attention_factor": "attention_factor"},
    "llama3": {"factor": "factor", "original_max_position_embeddings": "original_max_positions",
               "low_freq_factor": "low_freq_factor", "high_freq_factor": "high_freq_factor"},
}
ROPE_SCALING_MESSAGE = {"linear": "linear", "dynamic": "dynamic_ntk", "yarn": "yarn",
                        "llama3": "llama3"}


def _rope_encoding(cfg, head_dim):
    """config.json → the text of a PositionalEncoding { rope { ... } }."""
    params = cfg.get("rope_parameters") or {}  # transformers >= 5 keeps theta and scaling here
    theta = cfg.get("rope_theta", params.get("rope_theta", 10000.0))
    fields = [f"theta: {float(theta)!r}"]
    factor = cfg.get("partial_rotary_factor", params.get("partial_rotary_factor"))
    if factor is not None and float(factor) != 1.0:
        r = int(head_dim * float(factor))
        if r < 2 or r % 2:
            raise ConvertError(f"partial_rotary_factor {factor} gives rotary_dim {r}, which is "
                               f"not even and >= 2")
        fields.append(f"rotary_dim: {r}")
    scaling = cfg.get("rope_scaling") or (params if "rope_type" in params else None)
    if scaling:
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        if kind != "default":
            if kind not in ROPE_SCALING_KEYS:
                raise ConvertError(f"rope_scaling type {kind!r} is not supported (supported: "
                                   f"{', '.join(ROPE_SCALING_KEYS)})")
            allowed = ROPE_SCALING_KEYS[kind]
            ignore = {"type", "rope_type", "rope_theta", "partial_rotary_factor"}
            extra = sorted(k for k, v in scaling.items()
                           if k not in allowed and k not in ignore and v is not None)
            if extra:
                raise ConvertError(f"rope_scaling {kind!r}: keys {extra} are not supported")
            sub = []
            for hf_key, pb_key in allowed.items():
                value = scaling.get(hf_key)
                if value is None and hf_key == "original_max_position_embeddings" and \
                        kind in ("dynamic", "yarn"):
                    value = cfg.get("max_position_embeddings")
                if value is None:
                    continue
                if pb_key == "original_max_positions":
                    sub.append(f"{pb_key}: {int(value)}")
                else:
                    sub.append(f"{pb_key}: {float(value)!r}")
            if "factor" not in scaling:
                raise ConvertError(f"rope_scaling {kind!r} lacks 'factor'")
            fields.append(f"{ROPE_SCALING_MESSAGE[kind]} {{ {' '.join(sub)} }}")
    return f"rope {{ {' '.join(fields)} }}"


def convert_llama(ck, cfg, layer):
    _check_layer(cfg, layer, "num_hidden_layers")
    d = int(_need(cfg, "hidden_size"))
    H = int(_need(cfg, "num_attention_heads"))
    Hkv = int(cfg.get("num_key_value_heads") or H)
    hd = int(cfg.get("head_dim") or d // H)
    p = f"model.layers.{layer}.self_attn."
    w = {"q_proj.weight": ck.get(p + "q_proj.weight", (H * hd, d)),
         "k_proj.weight": ck.get(p + "k_proj.weight", (Hkv * hd, d)),
         "v_proj.weight": ck.get(p + "v_proj.weight", (Hkv * hd, d)),
         "o_proj.weight": ck.get(p + "o_proj.weight", (d, H * hd))}
    qkv_bias = ck.has(p + "q_proj.bias") or ck.has(p + "k_proj.bias") or ck.has(p + "v_proj.bias")
    if qkv_bias:
        w["q_proj.bias"] = ck.get(p + "q_proj.bias", (H * hd,))
        w["k_proj.bias"] = ck.get(p + "k_proj.bias", (Hkv * hd,))
        w["v_proj.bias"] = ck.get(p + "v_proj.bias", (Hkv * hd,))
    o_bias = ck.has(p + "o_proj.bias")
    if o_bias:
        w["o_proj.bias"] = ck.get(p + "o_proj.bias", (d,))
    fields = dict(d_model=d, num_heads=H, num_kv_heads=Hkv, head_dim=hd, qkv_bias=qkv_bias,
                  o_bias=o_bias)
    notes = []
    if cfg.get("sliding_window") and cfg.get("use_sliding_window", True):
        notes.append(f"sliding_window {cfg['sliding_window']} is not applied by attnserve "
                     f"(attention is over the whole sequence)")
    return fields, _rope_encoding(cfg, hd), w, notes


def convert_gpt2(ck, cfg, layer):
    _check_layer(cfg, layer, "n_layer")
    d = int(cfg.get("n_embd") or _need(cfg, "hidden_size"))
    H = int(cfg.get("n_head") or _need(cfg, "num_attention_heads"))
    n_pos = int(cfg.get("n_positions") or _need(cfg, "max_position_embeddings"))
    if d % H:
        raise ConvertError(f"n_embd {d} is not a multiple of n_head {H}")
    pre = _pick_prefix(ck, ("", "transformer."), f"h.{layer}.attn.c_attn.weight")
    p = f"{pre}h.{layer}.attn."
    c_attn_w = ck.get(p + "c_attn.weight", (d, 3 * d))   # Conv1D: [in, out]
    c_attn_b = ck.get(p + "c_attn.bias", (3 * d,))
    c_proj_w = ck.get(p + "c_proj.weight", (d, d))
    c_proj_b = ck.get(p + "c_proj.bias", (d,))
    w = {}
    for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
        w[name + ".weight"] = np.ascontiguousarray(c_attn_w[:, i * d:(i + 1) * d].T)
        w[name + ".bias"] = c_attn_b[i * d:(i + 1) * d].copy()
    w["o_proj.weight"] = np.ascontiguousarray(c_proj_w.T)
    w["o_proj.bias"] = c_proj_b
    wpe = _pick_prefix(ck, (pre, "", "transformer."), "wpe.weight") + "wpe.weight"
    w["position_embeddings.weight"] = ck.get(wpe, (n_pos, d))
    fields = dict(d_model=d, num_heads=H, num_kv_heads=H, head_dim=d // H, qkv_bias=True,
                  o_bias=True, max_positions=n_pos)
    scale = 1.0 / np.sqrt(d // H) if cfg.get("scale_attn_weights", True) else 1.0
    if cfg.get("scale_attn_by_inverse_layer_idx"):
        scale /= layer + 1
    if cfg.get("scale_attn_weights", True) is False or cfg.get("scale_attn_by_inverse_layer_idx"):
        fields["scale"] = float(scale)
    return fields, "learned {}", w, []


def convert_bert(ck, cfg, layer):
    _check_layer(cfg, layer, "num_hidden_layers")
    kind = cfg.get("position_embedding_type", "absolute")
    if kind != "absolute":
        raise ConvertError(f"BERT position_embedding_type {kind!r} is not supported "
                           f"(only 'absolute')")
    d = int(_need(cfg, "hidden_size"))
    H = int(_need(cfg, "num_attention_heads"))
    n_pos = int(_need(cfg, "max_position_embeddings"))
    if d % H:
        raise ConvertError(f"hidden_size {d} is not a multiple of num_attention_heads {H}")
    pre = _pick_prefix(ck, ("", "bert."), f"encoder.layer.{layer}.attention.self.query.weight")
    p = f"{pre}encoder.layer.{layer}.attention."
    w = {}
    for hf, ours in (("self.query", "q_proj"), ("self.key", "k_proj"), ("self.value", "v_proj"),
                     ("output.dense", "o_proj")):
        w[ours + ".weight"] = ck.get(f"{p}{hf}.weight", (d, d))
        w[ours + ".bias"] = ck.get(f"{p}{hf}.bias", (d,))
    w["position_embeddings.weight"] = ck.get(f"{pre}embeddings.position_embeddings.weight",
                                             (n_pos, d))
    fields = dict(d_model=d, num_heads=H, num_kv_heads=H, head_dim=d // H, qkv_bias=True,
                  o_bias=True, max_positions=n_pos)
    return fields, "learned {}", w, []


FAMILIES = {"llama": convert_llama, "mistral": convert_llama, "qwen2": convert_llama,
            "gpt2": convert_gpt2, "bert": convert_bert}


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def config_text(name, description, fields, encoding):
    lines = ["# Written by tools/hf_to_attnserve.py", f'name: "{name}"',
             f"description: {json.dumps(description)}"]
    for key in ("d_model", "num_heads", "num_kv_heads", "head_dim"):
        lines.append(f"{key}: {fields[key]}")
    for key in ("qkv_bias", "o_bias"):
        lines.append(f"{key}: {'true' if fields[key] else 'false'}")
    lines.append(f"encoding {{ {encoding} }}")
    if fields.get("max_positions"):
        lines.append(f"max_positions: {fields['max_positions']}")
    if "scale" in fields:
        lines.append(f"scale: {fields['scale']!r}")
    return "\n".join(lines) + "\n"


def convert(checkpoint_dir, out_dir, layer, name=None):
    folder_name = os.path.basename(os.path.normpath(out_dir))
    if name is None:
        name = folder_name
    if name != folder_name:
        raise ConvertError(f"--name {name!r} must equal the output folder's name "
                           f"{folder_name!r} (the server requires it)")
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,128}", name):
        raise ConvertError(f"model name {name!r} is invalid: 1-128 characters of [A-Za-z0-9._-]")
    if layer < 0:
        raise ConvertError(f"--layer {layer} is negative")
    cfg_path = os.path.join(checkpoint_dir, "config.json")
    try:
        with open(cfg_path) as f:
            cfg = json.load(f)
    except OSError as e:
        raise ConvertError(f"cannot read {cfg_path}: {e.strerror}") from None
    except ValueError as e:
        raise ConvertError(f"{cfg_path} is not valid JSON: {e}") from None
    model_type = cfg.get("model_type")
    if model_type not in FAMILIES:
        raise ConvertError(f"model_type {model_type!r} in {cfg_path} is not supported "
                           f"(supported: {', '.join(sorted(FAMILIES))})")
    ck = Checkpoint(checkpoint_dir)
    fields, encoding, weights, notes = FAMILIES[model_type](ck, cfg, layer)
    description = (f"{model_type} layer {layer} from "
                   f"{os.path.basename(os.path.abspath(checkpoint_dir))}")
    text = config_text(name, description, fields, encoding)
    os.makedirs(out_dir, exist_ok=True)
    cfg_out = os.path.join(out_dir, "config.pbtxt")
    weights_out = os.path.join(out_dir, "weights.safetensors")
    with open(weights_out, "wb") as f:
        f.write(safetensors_f32_bytes(weights))
    with open(cfg_out, "w") as f:
        f.write(text)
    return cfg_out, weights_out, text, weights, notes


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Convert one attention layer of a Hugging Face checkpoint (llama, mistral, "
                    "qwen2, gpt2, bert) into an attnserve model folder.")
    parser.add_argument("checkpoint_dir", help="folder with config.json and model.safetensors")
    parser.add_argument("out_model_dir", help="model folder to write (inside a model repository)")
    parser.add_argument("--layer", type=int, required=True, help="layer index (0-based)")
    parser.add_argument("--name", help="model name; must equal the folder name (the default)")
    args = parser.parse_args(argv)
    try:
        cfg_out, weights_out, text, weights, notes = convert(
            args.checkpoint_dir, args.out_model_dir, args.layer, args.name)
    except ConvertError as e:
        print(f"hf_to_attnserve: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {cfg_out}:")
    print("  " + text.rstrip("\n").replace("\n", "\n  "))
    print(f"wrote {weights_out} (F32):")
    for n, a in weights.items():
        print(f"  {n} {list(a.shape)}")
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
