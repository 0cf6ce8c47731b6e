#!/usr/bin/python3
"""Render attnserve positional encodings and attention maps as PNG images, every number taken from
the service.

Run with Debian's Python (python3-grpcio, python3-protobuf, python3-numpy, python3-matplotlib)
against a running server, with the stubs that the build generates (default: build/python in the
repository this file belongs to, or $ATTNSERVE_PYTHON_STUBS when set):

    /usr/bin/python3 clients/python/plot_encodings.py matrix --variant vaswani --out vaswani.png
    /usr/bin/python3 clients/python/plot_encodings.py matrix --model demo-learned --out learned.png
    /usr/bin/python3 clients/python/plot_encodings.py bias --model demo-alibi --causal --out alibi.png
    /usr/bin/python3 clients/python/plot_encodings.py bias --num_heads 8 --max_bias 8 --out a8.png
    /usr/bin/python3 clients/python/plot_encodings.py rope --scaling linear --factor 4 --out rope.png
    /usr/bin/python3 clients/python/plot_encodings.py attention --model demo-alibi --seq 16 --causal \
        --heads 0,8 --out attention.png

Subcommands:
  matrix  the additive encoding matrix P[position, dimension], from Encode on a zero input
          (input_scale 0), for a sinusoidal variant or a model's additive encoding (sinusoidal,
          learned).
  bias    the per-head score bias [heads, q_len, kv_len] of ALiBi or T5, from PositionBias; with
          --causal the masked (−inf) entries get their own colour.
  rope    RoPE's relative-position pattern: one random unit vector placed at every position is
          rotated by the service (Encode with an inline rope encoding, one head); the image is the
          Gram matrix of the rotated vectors, q_i·k_j with q = k, and its first row as a curve
          over the relative distance.
  attention
          a model's attention probabilities p[head, query i, key j], from Attend with
          return_attention on standard normal token embeddings (numpy default_rng(--seed)): one
          heat map per head, self-attention or (--kv_len, --cross) cross-attention over a random
          context, optionally --causal (masked entries grey). --save_npy writes the drawn arrays.
          docs/attention.md explains what the maps show.

RPC errors end the command with exit status 1 and the server's code and message on stderr.
"""
import argparse
import math
import os
import sys
import textwrap

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_STUBS = os.path.join(REPO_ROOT, "build", "python")
STUBS_ENV = "ATTNSERVE_PYTHON_STUBS"

MASKED_COLOUR = "#b0b0b0"  # mid grey: absent from the colour maps used for values


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


# --------------------------------------------------------------------------------------------
# gRPC plumbing


class Service:
    """The attnserve stubs and a channel, with errors turned into CommandError."""

    def __init__(self, address, stubs_dir, timeout):
        if not os.path.isfile(os.path.join(stubs_dir, "attnserve", "v1",
                                           "attention_service_pb2.py")):
            raise CommandError(
                f"no generated Python stubs in {stubs_dir!r} (build the project, e.g. "
                f"`cmake --build build`, or pass --stubs BUILD_DIR/python)")
        sys.path.insert(0, stubs_dir)
        import grpc
        from attnserve.v1 import attention_service_pb2 as api
        from attnserve.v1 import attention_service_pb2_grpc as api_grpc
        from attnserve.v1 import positional_encoding_pb2 as pe
        from attnserve.v1 import tensor_pb2

        self.grpc, self.api, self.pe, self.tensor_pb2 = grpc, api, pe, tensor_pb2
        self.address = address
        self.timeout = timeout
        # Attention maps grow as q_len·kv_len: lift gRPC's 4 MiB default receive cap (the server
        # bounds its messages with --max_message_bytes).
        self.channel = grpc.insecure_channel(address, options=[
            ("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)])
        self.stub = api_grpc.AttentionServiceStub(self.channel)

    def call(self, method, request):
        try:
            return getattr(self.stub, method)(request, timeout=self.timeout)
        except self.grpc.RpcError as error:
            raise CommandError(f"{method} RPC to {self.address} failed: "
                               f"{error.code().name}: {error.details()}") from None

    def to_tensor(self, array):
        array = np.ascontiguousarray(array, dtype="<f4")
        return self.tensor_pb2.Tensor(dtype=self.tensor_pb2.FLOAT32, shape=array.shape,
                                      data=array.tobytes())

    def from_tensor(self, tensor, what, expected_shape=None):
        if tensor.dtype != self.tensor_pb2.FLOAT32:
            raise CommandError(f"{what}: expected a FLOAT32 tensor, the server sent dtype "
                               f"{self.tensor_pb2.DataType.Name(tensor.dtype)}")
        shape = tuple(tensor.shape)
        if expected_shape is not None and shape != tuple(expected_shape):
            raise CommandError(f"{what}: expected shape {list(expected_shape)}, the server sent "
                               f"{list(shape)}")
        count = int(np.prod(shape)) if shape else 0
        if len(tensor.data) != 4 * count:
            raise CommandError(f"{what}: shape {list(shape)} needs {4 * count} bytes, the server "
                               f"sent {len(tensor.data)}")
        return np.frombuffer(tensor.data, dtype="<f4").reshape(shape).astype(np.float64)

    def model(self, name):
        return self.call("GetModel", self.api.GetModelRequest(name=name)).config

    def close(self):
        self.channel.close()


def warn_if_not_finite(values, what, allow_neg_inf=False):
    """Reports NaN / ±inf coming from the server instead of silently plotting around them."""
    bad = np.isnan(values) | np.isposinf(values)
    if not allow_neg_inf:
        bad |= np.isneginf(values)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        print(f"plot_encodings: warning: {what} has {int(bad.sum())} non-finite value(s) from the "
              f"server, first at index {list(index)} = {values[index]}", file=sys.stderr)


def oneof_name(encoding):
    return encoding.WhichOneof("kind") or "unset"


# --------------------------------------------------------------------------------------------
# matplotlib


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def colour_map(name):
    """The matplotlib colour map --cmap names, as a copy the caller may change."""
    import matplotlib
    if name not in matplotlib.colormaps:
        raise CommandError(f"--cmap {name!r} is not a matplotlib colour map; choose one of "
                           f"{', '.join(sorted(matplotlib.colormaps))}")
    return matplotlib.colormaps[name].copy()


def save(fig, out, dpi):
    directory = os.path.dirname(os.path.abspath(out))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    print(f"wrote {out}")


def fmt(value):
    return f"{value:g}"


# --------------------------------------------------------------------------------------------
# matrix: P[position, dimension] from Encode on zeros

VARIANTS = {"vaswani": "VASWANI", "tensor2tensor": "TENSOR2TENSOR", "fairseq": "FAIRSEQ"}


def describe_sinusoidal(pe, enc, d_model):
    variant = pe.SinusoidalVariant.Name(enc.variant)
    if variant in ("SINUSOIDAL_VARIANT_UNSPECIFIED", "VASWANI"):
        base = enc.base or 10000
        return (f"sinusoidal (Vaswani): P[p,2k]=sin(p·ω_k), P[p,2k+1]=cos(p·ω_k), "
                f"ω_k={fmt(base)}^(−2k/{d_model})")
    if variant == "TENSOR2TENSOR":
        lo, hi = enc.min_timescale or 1, enc.max_timescale or 10000
        return (f"sinusoidal (tensor2tensor): [sin(p·ω) ‖ cos(p·ω)], "
                f"timescales {fmt(lo)}…{fmt(hi)}")
    base = enc.base or 10000
    pad = enc.padding_idx if enc.HasField("padding_idx") else 1
    return (f"sinusoidal (fairseq): [sin ‖ cos], max timescale {fmt(base)}, "
            f"position p reads row padding_idx+1+p = {pad + 1}+p")


def cmd_matrix(args, svc):
    api, pe = svc.api, svc.pe
    request = api.EncodeRequest(position_offset=args.position_offset, input_scale=0.0)
    if args.model:
        config = svc.model(args.model)
        kind = oneof_name(config.encoding)
        if kind not in ("sinusoidal", "learned"):
            raise CommandError(
                f"model {args.model!r} has a {kind!r} encoding, which is not added to the input, "
                f"so it has no encoding matrix; use the `bias` (alibi, t5) or `rope` subcommand")
        if args.d_model is not None and args.d_model != config.d_model:
            raise CommandError(f"--d_model {args.d_model} differs from model {args.model!r}'s "
                               f"d_model {config.d_model}; leave --d_model out with --model")
        d_model = config.d_model
        request.model = args.model
        if kind == "sinusoidal":
            what = f"model {args.model}: " + describe_sinusoidal(pe, config.encoding.sinusoidal,
                                                                 d_model)
        else:
            rows = config.max_positions
            what = (f"model {args.model}: learned absolute table E[p] "
                    f"(position_embeddings.weight{f', {rows} rows' if rows else ''})")
        symmetric_limit = None
    else:
        d_model = args.d_model if args.d_model is not None else 128
        enc = pe.SinusoidalEncoding(variant=getattr(pe, VARIANTS[args.variant]))
        if args.base is not None:
            enc.base = args.base
        if args.min_timescale is not None:
            enc.min_timescale = args.min_timescale
        if args.max_timescale is not None:
            enc.max_timescale = args.max_timescale
        if args.padding_idx is not None:
            enc.padding_idx = args.padding_idx
        request.encoding.CopyFrom(pe.PositionalEncoding(sinusoidal=enc))
        what = describe_sinusoidal(pe, enc, d_model)
        symmetric_limit = 1.0
    if args.positions < 1 or d_model < 1:
        raise CommandError("--positions and --d_model must be >= 1")

    request.input.CopyFrom(svc.to_tensor(np.zeros((1, args.positions, d_model), np.float32)))
    reply = svc.call("Encode", request)
    table = svc.from_tensor(reply.output, "Encode output", (1, args.positions, d_model))[0]
    warn_if_not_finite(table, "Encode output")

    limit = symmetric_limit or float(np.nanmax(np.abs(table[np.isfinite(table)]), initial=0) or 1)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 5.6), layout="constrained")
    first, last = args.position_offset, args.position_offset + args.positions - 1
    image = ax.imshow(table, cmap=colour_map(args.cmap), vmin=-limit, vmax=limit,
                      aspect="auto", interpolation="nearest",
                      extent=(-0.5, d_model - 0.5, last + 0.5, first - 0.5))
    ax.set_xlabel(f"dimension (channel 0…{d_model - 1} of d_model={d_model})")
    ax.set_ylabel(f"position p ({first}…{last})")
    ax.set_title(f"Positional encoding matrix P[position, dimension]\n{what}", fontsize=10)
    fig.colorbar(image, ax=ax, label="P[p, channel] (added to the embedding)")
    save(fig, args.out, args.dpi)


# --------------------------------------------------------------------------------------------
# bias: PositionBias [heads, q_len, kv_len]


def cmd_bias(args, svc):
    api, pe = svc.api, svc.pe
    kv_len = args.kv_len or args.q_len
    request = api.PositionBiasRequest(q_len=args.q_len, kv_len=args.kv_len, causal=args.causal)
    if args.model:
        config = svc.model(args.model)
        kind = oneof_name(config.encoding)
        if kind not in ("alibi", "t5"):
            raise CommandError(f"model {args.model!r} has a {kind!r} encoding; PositionBias "
                               f"plots need an alibi or t5 model (e.g. demo-alibi, demo-t5)")
        heads = config.num_heads
        request.model = args.model
        if kind == "alibi":
            what = f"model {args.model}: ALiBi, max_bias {fmt(config.encoding.alibi.max_bias or 8)}"
        else:
            t5 = config.encoding.t5
            bidirectional = t5.bidirectional if t5.HasField("bidirectional") else True
            what = (f"model {args.model}: T5 relative bias, {t5.num_buckets or 32} buckets, "
                    f"max_distance {t5.max_distance or 128}, "
                    f"{'bidirectional' if bidirectional else 'causal'} buckets, learned table")
    else:
        heads = args.num_heads
        kind = "alibi"
        alibi = pe.AlibiEncoding()
        if args.max_bias is not None:
            alibi.max_bias = args.max_bias
        request.encoding.CopyFrom(pe.PositionalEncoding(alibi=alibi))
        request.num_heads = heads
        what = f"inline ALiBi, {heads} heads, max_bias {fmt(args.max_bias or 8)}"
    what += (", causal mask" if args.causal else ", no mask")

    reply = svc.call("PositionBias", request)
    bias = svc.from_tensor(reply.bias, "PositionBias bias", (heads, args.q_len, kv_len))
    warn_if_not_finite(bias, "PositionBias bias", allow_neg_inf=args.causal)

    masked = np.isneginf(bias)
    finite = bias[np.isfinite(bias)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 0.0)
    if lo == hi:
        lo, hi = lo - 1, hi + 1

    plt = pyplot()
    from matplotlib.patches import Patch
    cmap = colour_map(args.cmap)
    cmap.set_bad(MASKED_COLOUR)

    cols = args.cols or math.ceil(math.sqrt(heads))
    rows = math.ceil(heads / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols + 1.4, 2.5 * rows + 1.1),
                             squeeze=False, layout="constrained")
    image = None
    for h in range(rows * cols):
        ax = axes[h // cols][h % cols]
        if h >= heads:
            ax.axis("off")
            continue
        data = np.ma.masked_array(bias[h], mask=masked[h] | ~np.isfinite(bias[h]))
        image = ax.imshow(data, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest",
                          aspect="auto")
        title = f"head {h}"
        if kind == "alibi" and kv_len >= 2 and np.isfinite(bias[h, -1, -2:]).all():
            # The slope as the service applies it: one step of distance along the last row.
            title += f"  (slope m={fmt(round(bias[h, -1, -1] - bias[h, -1, -2], 5))})"
        ax.set_title(title, fontsize=9)
        if h % cols == 0:
            ax.set_ylabel("query i")
        if h // cols == rows - 1 or h + cols >= heads:
            ax.set_xlabel("key j")
        ax.tick_params(labelsize=7)
    fig.colorbar(image, ax=axes, shrink=0.8,
                 label="bias added to the attention logit q·k (score units)")
    fig.suptitle(f"Position bias [head, query i, key j], q_len={args.q_len}, kv_len={kv_len}\n"
                 f"{what}", fontsize=10)
    if masked.any():
        fig.legend(handles=[Patch(color=MASKED_COLOUR, label="masked (−inf)")],
                   loc="lower left", fontsize=8, frameon=False)
    save(fig, args.out, args.dpi)


# --------------------------------------------------------------------------------------------
# rope: Gram matrix of rotated copies of one vector

LAYOUTS = {"half_split": "HALF_SPLIT", "interleaved": "INTERLEAVED"}


def rope_encoding(args, pe, scaling):
    rope = pe.RotaryEncoding(layout=getattr(pe, LAYOUTS[args.layout]))
    if args.theta is not None:
        rope.theta = args.theta
    if args.rotary_dim is not None:
        rope.rotary_dim = args.rotary_dim
    if scaling == "linear":
        rope.linear.CopyFrom(pe.LinearRopeScaling(factor=args.factor))
    elif scaling == "dynamic_ntk":
        rope.dynamic_ntk.CopyFrom(pe.DynamicNtkRopeScaling(
            factor=args.factor, original_max_positions=args.original_max_positions))
    elif scaling == "yarn":
        yarn = pe.YarnRopeScaling(factor=args.factor,
                                  original_max_positions=args.original_max_positions)
        if args.attention_factor is not None:
            yarn.attention_factor = args.attention_factor
        rope.yarn.CopyFrom(yarn)
    elif scaling == "llama3":
        llama3 = pe.Llama3RopeScaling(factor=args.factor)
        if args.original_max_positions:
            llama3.original_max_positions = args.original_max_positions
        if args.low_freq_factor is not None:
            llama3.low_freq_factor = args.low_freq_factor
        if args.high_freq_factor is not None:
            llama3.high_freq_factor = args.high_freq_factor
        rope.llama3.CopyFrom(llama3)
    return pe.PositionalEncoding(rope=rope)


def scaling_text(args, scaling):
    if scaling == "none":
        return "no scaling"
    text = f"{scaling} scaling, factor {fmt(args.factor)}"
    if scaling in ("dynamic_ntk", "yarn") or (scaling == "llama3" and args.original_max_positions):
        text += f", original_max_positions {args.original_max_positions}"
    if scaling == "yarn" and args.attention_factor is not None:
        text += f", attention_factor {fmt(args.attention_factor)}"
    return text


def rotated_gram(args, svc, vector, scaling):
    """Rotates `vector` placed at positions offset…offset+N−1 on the server; returns q_i·k_j."""
    n, hd = args.positions, args.head_dim
    x = np.broadcast_to(vector.astype(np.float32), (1, n, hd))
    request = svc.api.EncodeRequest(input=svc.to_tensor(x),
                                    encoding=rope_encoding(args, svc.pe, scaling),
                                    position_offset=args.position_offset, head_dim=hd)
    reply = svc.call("Encode", request)
    rotated = svc.from_tensor(reply.output, "Encode output (rope)", (1, n, hd))[0]
    warn_if_not_finite(rotated, "Encode output (rope)")
    return rotated @ rotated.T  # the dot products of the server's rotated vectors


def cmd_rope(args, svc):
    if args.scaling != "none" and args.factor is None:
        raise CommandError(f"--scaling {args.scaling} needs --factor")
    if args.scaling in ("dynamic_ntk", "yarn") and not args.original_max_positions:
        raise CommandError(f"--scaling {args.scaling} needs --original_max_positions")
    if args.positions < 2 or args.head_dim < 2:
        raise CommandError("--positions and --head_dim must be >= 2")

    if args.vector == "ones":
        vector = np.ones(args.head_dim) / math.sqrt(args.head_dim)
    else:
        vector = np.random.default_rng(args.seed).standard_normal(args.head_dim)
        vector /= np.linalg.norm(vector)
    gram = rotated_gram(args, svc, vector, args.scaling)
    baseline = rotated_gram(args, svc, vector, "none") if args.scaling != "none" else None

    n = args.positions
    first = args.position_offset
    r = args.rotary_dim or args.head_dim
    params = (f"head_dim {args.head_dim}, rotary_dim {r}, theta {fmt(args.theta or 10000)}, "
              f"{args.layout.replace('_', '-')}, {scaling_text(args, args.scaling)}")
    vector_text = ("q = k = the all-ones unit vector" if args.vector == "ones"
                   else f"q = k = one random unit vector (seed {args.seed})")

    plt = pyplot()
    fig, (ax_map, ax_curve) = plt.subplots(1, 2, figsize=(12, 5.2), layout="constrained",
                                           gridspec_kw={"width_ratios": [1.05, 1]})
    limit = float(np.abs(gram).max()) or 1.0
    image = ax_map.imshow(gram, cmap=colour_map(args.cmap), vmin=-limit, vmax=limit,
                          interpolation="nearest",
                          extent=(first - 0.5, first + n - 0.5, first + n - 0.5, first - 0.5))
    ax_map.set_xlabel("key position j")
    ax_map.set_ylabel("query position i")
    ax_map.set_title("RoPE(q, i) · RoPE(k, j)", fontsize=10)
    fig.colorbar(image, ax=ax_map, shrink=0.9, label="score q_i·k_j (unscaled logit)")

    distance = np.arange(n)
    if baseline is not None:
        ax_curve.plot(distance, baseline[0], color="0.6", linestyle="--", linewidth=1,
                      label="no scaling (same vector)")
    ax_curve.plot(distance, gram[0], color="C0", linewidth=1.4,
                  label=scaling_text(args, args.scaling))
    ax_curve.axhline(0, color="0.3", linewidth=0.6)
    ax_curve.set_xlabel(f"relative distance j − i (positions; row i = {first})")
    ax_curve.set_ylabel("score q_i·k_j")
    ax_curve.set_title("score vs. relative distance (first row of the map)", fontsize=10)
    ax_curve.legend(fontsize=8, loc="upper right")
    ax_curve.grid(alpha=0.3)
    fig.suptitle(f"RoPE relative-position pattern over positions {first}…{first + n - 1}: "
                 f"{vector_text}, rotated by the service\n{params}", fontsize=10)
    save(fig, args.out, args.dpi)


# --------------------------------------------------------------------------------------------
# attention: a model's probabilities [heads, q_len, kv_len] from Attend(return_attention)


def parse_heads(text, num_heads, model):
    """'all', or comma-separated head indices and ranges ('0,3', '4-7'), in the order given."""
    if text in (None, "", "all"):
        return list(range(num_heads))
    heads = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                first, last = (int(v) for v in part.split("-", 1))
                chosen = list(range(first, last + 1))
            else:
                chosen = [int(part)]
        except ValueError:
            raise CommandError(f"--heads {text!r}: expected head indices and ranges such as "
                               f"0,3 or 4-7, or all") from None
        if not chosen:
            raise CommandError(f"--heads {text!r}: the range {part!r} is empty")
        for h in chosen:
            if not 0 <= h < num_heads:
                raise CommandError(f"--heads {text!r}: head {h} does not exist; model {model!r} "
                                   f"has heads 0…{num_heads - 1}")
            if h in heads:
                raise CommandError(f"--heads {text!r}: head {h} is named twice")
            heads.append(h)
    return heads


def attention_inputs(seed, seq, kv_len, d_model, cross):
    """The random token embeddings of `plot attention`: one numpy default_rng(seed) draws the
    query [1, seq, d_model] first, then (cross-attention only) the context [1, kv_len, d_model],
    both standard normal, rounded to float32 (what travels)."""
    rng = np.random.default_rng(seed)
    query = rng.standard_normal((1, seq, d_model)).astype(np.float32)
    context = rng.standard_normal((1, kv_len, d_model)).astype(np.float32) if cross else None
    return query, context


def attention_figsize(panels, cols):
    """Figure size in inches of an attention grid; the PNG is this times --dpi pixels."""
    rows = math.ceil(panels / cols)
    return (max(2.9 * cols + 1.5, 6.5), 2.7 * rows + 1.4)


def causal_hidden(seq, kv_len):
    """[seq, kv_len] booleans: the keys the bottom-right aligned causal mask hides from each
    query (query i sees keys j <= i + kv_len − seq)."""
    i = np.arange(seq)[:, None]
    j = np.arange(kv_len)[None, :]
    return j > i + kv_len - seq


def cmd_attention(args, svc):
    if args.seq < 1:
        raise CommandError("--seq must be >= 1")
    if args.kv_len is not None and args.kv_len < 1:
        raise CommandError("--kv_len must be >= 1")
    config = svc.model(args.model)
    kind = oneof_name(config.encoding)
    heads_total = config.num_heads
    kv_heads = config.num_kv_heads or heads_total
    group = heads_total // kv_heads
    heads = parse_heads(args.heads, heads_total, args.model)

    cross = args.cross or args.kv_len is not None
    kv_len = args.kv_len if args.kv_len is not None else args.seq
    query, context = attention_inputs(args.seed, args.seq, kv_len, config.d_model, cross)
    request = svc.api.AttendRequest(model=args.model, query=svc.to_tensor(query),
                                    causal=args.causal, position_offset=args.position_offset,
                                    return_attention=True)
    if cross:
        request.context.CopyFrom(svc.to_tensor(context))
    reply = svc.call("Attend", request)
    probabilities = svc.from_tensor(reply.attention, "Attend attention",
                                    (1, heads_total, args.seq, kv_len))[0]
    warn_if_not_finite(probabilities, "Attend attention")

    hidden = causal_hidden(args.seq, kv_len) if args.causal else np.zeros((args.seq, kv_len),
                                                                          bool)
    leaked = hidden[None] & (probabilities != 0)
    if leaked.any():
        index = tuple(int(i) for i in np.argwhere(leaked)[0])
        print(f"plot_encodings: warning: {int(leaked.sum())} probabilit(ies) behind the causal "
              f"mask are not 0, first at [head, query, key] {list(index)} = "
              f"{probabilities[index]}", file=sys.stderr)
    sums = probabilities.sum(axis=-1)
    off = np.abs(sums - 1) > 1e-3
    if off.any():
        index = tuple(int(i) for i in np.argwhere(off)[0])
        print(f"plot_encodings: warning: {int(off.sum())} row(s) do not sum to 1, first at "
              f"[head, query] {list(index)}: {sums[index]}", file=sys.stderr)

    drawn = probabilities[heads]
    vmax = args.vmax if args.vmax is not None else float(drawn.max(initial=0)) or 1.0

    plt = pyplot()
    cmap = colour_map(args.cmap)
    cmap.set_bad(MASKED_COLOUR)

    cols = args.cols or math.ceil(math.sqrt(len(heads)))
    rows = math.ceil(len(heads) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=attention_figsize(len(heads), cols),
                             squeeze=False, layout="constrained")
    first_query = args.position_offset
    first_key = 0 if cross else args.position_offset
    extent = (first_key - 0.5, first_key + kv_len - 0.5,
              first_query + args.seq - 0.5, first_query - 0.5)
    images = []
    for n in range(rows * cols):
        ax = axes[n // cols][n % cols]
        if n >= len(heads):
            ax.axis("off")
            continue
        h = heads[n]
        data = np.ma.masked_array(probabilities[h], mask=hidden)
        image = ax.imshow(data, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest",
                          aspect="auto", extent=extent)
        images.append(image)
        title = f"head {h}"
        if group > 1:
            title += f" (K/V head {h // group})"
        ax.set_title(title, fontsize=9)
        if n % cols == 0:
            ax.set_ylabel("query position i")
        if n // cols == rows - 1 or n + cols >= len(heads):
            ax.set_xlabel("context token j" if cross else "key position j")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.tick_params(labelsize=7)
    fig.colorbar(images[0], ax=axes, shrink=0.8,
                 label="attention probability p_ij")
    mode = f"cross-attention over a {kv_len}-token context" if cross else "self-attention"
    mask = "causal mask (grey: masked)" if args.causal else "no mask"
    shown = "all heads" if len(heads) == heads_total else f"heads {heads} of {heads_total}"
    lines = [f"Attention probabilities of {args.model}: {mode}, {mask}",
             f"{kind} encoding, {heads_total} heads"
             f"{f' sharing {kv_heads} K/V heads' if group > 1 else ''}, q_len={args.seq}, "
             f"kv_len={kv_len}, position_offset={args.position_offset}",
             f"standard normal input (seed {args.seed}), {shown}"]
    width = int(fig.get_figwidth() * 100 / 6.2)  # characters of a 9 pt line that fit
    fig.suptitle("\n".join(textwrap.fill(line, width) for line in lines), fontsize=9)
    save(fig, args.out, args.dpi)
    if args.save_npy:
        # The arrays exactly as handed to imshow, in drawing order: [len(heads), q_len, kv_len].
        stack = np.stack([np.ma.getdata(image.get_array()) for image in images])
        directory = os.path.dirname(os.path.abspath(args.save_npy))
        os.makedirs(directory, exist_ok=True)
        np.save(args.save_npy, stack)
        print(f"wrote {args.save_npy}")


# --------------------------------------------------------------------------------------------


def parse_args(argv):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--address", default="127.0.0.1:50051",
                        help="HOST:PORT of the attnserve gRPC endpoint (default %(default)s)")
    common.add_argument("--stubs", default=os.environ.get(STUBS_ENV) or DEFAULT_STUBS,
                        help="folder of the generated Python stubs, BUILD_DIR/python (default "
                             f"${STUBS_ENV}, else {DEFAULT_STUBS})")
    common.add_argument("--out", help="PNG file to write (default: <subcommand>.png)")
    common.add_argument("--dpi", type=int, default=100, help="PNG resolution (default 100)")
    common.add_argument("--timeout", type=float, default=30,
                        help="deadline of each RPC in seconds (default 30)")

    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `plot_encodings.py SUBCOMMAND --help` for a subcommand's options.")
    sub = parser.add_subparsers(dest="command", required=True)

    m = sub.add_parser("matrix", parents=[common],
                       help="encoding matrix P[position, dimension] (Encode on zeros)")
    source = m.add_mutually_exclusive_group()
    source.add_argument("--variant", choices=sorted(VARIANTS), default="vaswani",
                        help="sinusoidal variant (default vaswani)")
    source.add_argument("--model", help="a loaded model whose additive encoding to show "
                                        "(e.g. demo-learned, demo-sinusoidal)")
    m.add_argument("--positions", type=int, default=100, help="number of positions (default 100)")
    m.add_argument("--position_offset", type=int, default=0, help="first position (default 0)")
    m.add_argument("--d_model", type=int,
                   help="number of dimensions (default 128; with --model: the model's d_model)")
    m.add_argument("--base", type=float, help="VASWANI/FAIRSEQ wavelength base (server default "
                                              "10000)")
    m.add_argument("--min_timescale", type=float, help="TENSOR2TENSOR min timescale (default 1)")
    m.add_argument("--max_timescale", type=float,
                   help="TENSOR2TENSOR max timescale (default 10000)")
    m.add_argument("--padding_idx", type=int, help="FAIRSEQ padding index (default 1)")
    m.add_argument("--cmap", default="RdBu_r", help="matplotlib colour map (default RdBu_r)")
    m.set_defaults(handler=cmd_matrix)

    b = sub.add_parser("bias", parents=[common],
                       help="ALiBi / T5 score bias per head (PositionBias)")
    b.add_argument("--model", help="a loaded alibi or t5 model (e.g. demo-alibi, demo-t5); "
                                   "without it, an inline ALiBi encoding with --num_heads")
    b.add_argument("--num_heads", type=int, default=8,
                   help="heads of the inline ALiBi encoding (default 8)")
    b.add_argument("--max_bias", type=float, help="inline ALiBi max_bias (server default 8)")
    b.add_argument("--q_len", type=int, default=48, help="number of queries (default 48)")
    b.add_argument("--kv_len", type=int, default=0, help="number of keys (default: q_len)")
    b.add_argument("--causal", action="store_true",
                   help="apply the causal mask (bottom-right aligned); masked entries are −inf "
                        "and drawn grey")
    b.add_argument("--cols", type=int, help="subplots per row (default: about sqrt(heads))")
    b.add_argument("--cmap", default="viridis", help="matplotlib colour map (default viridis)")
    b.set_defaults(handler=cmd_bias)

    r = sub.add_parser("rope", parents=[common],
                       help="RoPE relative-position pattern (Encode with inline rope)")
    r.add_argument("--positions", type=int, default=128, help="number of positions N (default 128)")
    r.add_argument("--position_offset", type=int, default=0, help="first position (default 0)")
    r.add_argument("--head_dim", type=int, default=64, help="head width hd (default 64)")
    r.add_argument("--theta", type=float, help="frequency base (server default 10000)")
    r.add_argument("--rotary_dim", type=int, help="rotated dims per head (default: head_dim)")
    r.add_argument("--layout", choices=sorted(LAYOUTS), default="half_split",
                   help="pairing of the rotated dims (default half_split)")
    r.add_argument("--scaling", choices=["none", "linear", "dynamic_ntk", "yarn", "llama3"],
                   default="none", help="context-extension scaling (default none); the curve "
                                        "then also shows the unscaled pattern")
    r.add_argument("--factor", type=float, help="scaling factor (needed with --scaling)")
    r.add_argument("--original_max_positions", type=int,
                   help="trained context length (dynamic_ntk, yarn: required; llama3: server "
                        "default 8192)")
    r.add_argument("--attention_factor", type=float, help="yarn attention factor override")
    r.add_argument("--low_freq_factor", type=float, help="llama3 low_freq_factor (default 1)")
    r.add_argument("--high_freq_factor", type=float, help="llama3 high_freq_factor (default 4)")
    r.add_argument("--vector", choices=["random", "ones"], default="random",
                   help="q = k: a random unit vector (default) or the all-ones unit vector")
    r.add_argument("--seed", type=int, default=0, help="seed of the random vector (default 0)")
    r.add_argument("--cmap", default="RdBu_r", help="matplotlib colour map (default RdBu_r)")
    r.set_defaults(handler=cmd_rope)

    a = sub.add_parser("attention", parents=[common],
                       help="a model's attention probabilities per head (Attend with "
                            "return_attention)")
    a.add_argument("--model", required=True, help="a loaded model (e.g. demo-alibi, demo-rope)")
    a.add_argument("--seq", type=int, default=16, help="number of query tokens (default 16)")
    a.add_argument("--kv_len", type=int,
                   help="cross-attention over a random context of this many tokens (default: "
                        "self-attention, kv_len = seq)")
    a.add_argument("--cross", action="store_true",
                   help="cross-attention even without --kv_len (a context of seq tokens)")
    a.add_argument("--causal", action="store_true",
                   help="causal mask (bottom-right aligned); masked entries are drawn grey")
    a.add_argument("--position_offset", type=int, default=0,
                   help="position of the first query token (default 0)")
    a.add_argument("--seed", type=int, default=0,
                   help="seed of numpy's default_rng, which draws the standard normal query "
                        "[1, seq, d_model], then the context (default 0)")
    a.add_argument("--heads", default="all",
                   help="heads to draw, in this order: indices and ranges such as 0,3 or 4-7 "
                        "(default all)")
    a.add_argument("--cols", type=int, help="subplots per row (default: about sqrt(heads))")
    a.add_argument("--vmax", type=float,
                   help="top of the colour scale (default: the largest probability drawn)")
    a.add_argument("--save_npy", metavar="FILE.npy",
                   help="also save the drawn probabilities, [drawn heads, seq, kv_len] float64 "
                        "in drawing order")
    a.add_argument("--cmap", default="viridis", help="matplotlib colour map (default viridis)")
    a.set_defaults(handler=cmd_attention)

    args = parser.parse_args(argv)
    if args.out is None:
        args.out = f"{args.command}.png"
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    svc = None
    try:
        svc = Service(args.address, args.stubs, args.timeout)
        args.handler(args, svc)
    except CommandError as error:
        print(f"plot_encodings: error: {error}", file=sys.stderr)
        return 1
    finally:
        if svc is not None:
            svc.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
