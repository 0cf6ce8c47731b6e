// Reading ModelConfig and PositionalEncoding as proto3 JSON (proto field names). proto3 JSON
// writes int64 fields as strings, and a field at its default is either left out or written as
// 0, so every number goes through num(), which applies the proto's own default for 0
// (model_config.proto, positional_encoding.proto: "Default (0): …").

function num(value, fallback = 0) {
  const n = Number(value);
  return Number.isFinite(n) && n !== 0 ? n : fallback;
}

// The layer's shape with the proto's defaults resolved: num_kv_heads 0 → num_heads,
// head_dim 0 → d_model / num_heads.
export function modelShape(config) {
  const dModel = num(config.d_model);
  const heads = num(config.num_heads, 1);
  return {
    dModel,
    heads,
    kvHeads: num(config.num_kv_heads, heads),
    headDim: num(config.head_dim, Math.floor(dModel / heads)),
    maxPositions: num(config.max_positions),
  };
}

// Which kind of the PositionalEncoding oneof is set ("none" when the encoding is absent).
export function encodingKind(encoding) {
  const kinds = ['none', 'sinusoidal', 'learned', 'rope', 'alibi', 't5', 'cope'];
  return kinds.find((kind) => encoding && kind in encoding) ?? 'none';
}

const SINUSOIDAL_NAMES = {
  VASWANI: 'Vaswani', SINUSOIDAL_VARIANT_UNSPECIFIED: 'Vaswani',
  TENSOR2TENSOR: 'tensor2tensor', FAIRSEQ: 'fairseq',
};

// The RoPE scaling in words, e.g. "YaRN ×4 from 4096"; '' when there is none.
function describeRopeScaling(rope) {
  if (rope.linear) return `linear ×${num(rope.linear.factor)}`;
  if (rope.dynamic_ntk) {
    return `dynamic NTK ×${num(rope.dynamic_ntk.factor)} from ${num(rope.dynamic_ntk.original_max_positions)}`;
  }
  if (rope.yarn) return `YaRN ×${num(rope.yarn.factor)} from ${num(rope.yarn.original_max_positions)}`;
  if (rope.llama3) {
    return `llama3 ×${num(rope.llama3.factor)} from ${num(rope.llama3.original_max_positions, 8192)}`;
  }
  if (rope.longrope) {
    return `LongRoPE ${num(rope.longrope.original_max_positions)}→${num(rope.longrope.max_positions)}`;
  }
  return '';
}

// A one-line reading of an encoding, e.g. "RoPE θ=10000, YaRN ×4 from 4096".
export function encodingSummary(encoding, config = {}) {
  const kind = encodingKind(encoding);
  const e = encoding?.[kind] ?? {};
  switch (kind) {
    case 'none':
      return 'none (NoPE)';
    case 'sinusoidal': {
      const variant = SINUSOIDAL_NAMES[e.variant ?? 'VASWANI'] ?? e.variant;
      return `sinusoidal ${variant}${e.base ? `, base ${num(e.base)}` : ''}`;
    }
    case 'learned': {
      const rows = num(config.max_positions);
      return rows ? `learned absolute, ${rows} positions` : 'learned absolute';
    }
    case 'rope': {
      const parts = [`RoPE θ=${num(e.theta, 10000)}`];
      if (num(e.rotary_dim)) parts.push(`rotary ${num(e.rotary_dim)} dims`);
      if (e.layout === 'INTERLEAVED') parts.push('interleaved');
      const scaling = describeRopeScaling(e);
      if (scaling) parts.push(scaling);
      return parts.join(', ');
    }
    case 'alibi':
      return `ALiBi, max bias ${num(e.max_bias, 8)}`;
    case 't5': {
      const direction = e.bidirectional === false ? 'causal buckets' : 'bidirectional';
      return `T5 bias, ${num(e.num_buckets, 32)} buckets, max distance ${num(e.max_distance, 128)}, ${direction}`;
    }
    case 'cope':
      return `CoPE, ${num(e.npos_max)} positions`;
    default:
      return kind;
  }
}
