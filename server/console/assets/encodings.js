// Encodings explorer (#/encodings?family=…): asks the service for an encoding's numbers and
// draws them. Nothing here re-implements an encoding. What the page computes itself: RoPE's
// relative score pattern (dot products of the vectors the service rotated); LongRoPE's factor
// lists when they are left empty (made up so that the scaling can be tried at all, and sent to
// the service like typed ones); and each ALiBi head's slope in its title, read from the bias
// the service returned.
//
// Hash parameters (the family's own; others are dropped):
//   family      sinusoidal | learned | rope | alibi | t5 | cope
//   sinusoidal  variant (vaswani | tensor2tensor | fairseq), seq, d_model, offset, base
//               (vaswani, fairseq), min_ts, max_ts (tensor2tensor), padding_idx (fairseq)
//   learned     model, seq, offset
//   rope        seq, head_dim, theta, rotary_dim (0: head_dim), layout (half_split |
//               interleaved), offset, scaling (none | linear | dynamic_ntk | yarn | llama3 |
//               longrope), factor, original_max, beta_fast, beta_slow, attention_factor
//               (empty: the scaling's default), low_freq, high_freq, max_positions, short, long
//               (longrope factor lists, comma-separated; empty: generated, see below)
//   alibi       heads, max_bias, seq (q_len), kv_len, causal
//   t5          source (inline | model), model, num_buckets, max_distance, bidirectional, seq
//               (q_len), kv_len, causal
//   cope        source (sdpa | model), model, seq, heads, head_dim, npos_max, seed

import { infer } from './api.js';
import { encodingKind, modelShape } from './config.js';
import { createControls, fieldParams, OFFSET_FIELD, readFields, SEED_FIELD } from './controls.js';
import { element } from './dom.js';
import { createHeadMaps, createHeatmap, replaceMaps } from './heatmap.js';
import { createRng } from './prng.js';

// How the tooltip names a bias cell the service wrote as null: a −∞ mask.
const MASKED_BIAS = '−∞ (masked)';

const seqField = (label, def, max) => ({ key: 'seq', label, type: 'int', default: def, min: 1, max });
const kvField = { key: 'kv_len', label: 'kv_len', type: 'int', default: 32, min: 1, max: 256 };
const causalField = (def) => ({ key: 'causal', label: 'causal', type: 'bool', default: def });

// The loaded (or stale, still serving) models whose encoding is `kind`, as select options.
function modelOptions(models, kind) {
  return models
    .filter((m) => m.state !== 'failed' && encodingKind(m.config?.encoding) === kind)
    .map((m) => [m.name, m.name]);
}

function modelField(models, kind, visible) {
  const options = modelOptions(models, kind);
  return { key: 'model', label: 'model', type: 'select', default: options[0]?.[0] ?? '', options, visible };
}

function modelConfig(models, name) {
  return models.find((m) => m.name === name)?.config;
}

// Each family's fields (after the family select).

function sinusoidalFields() {
  const variantIs = (...names) => (v) => names.includes(v.variant);
  return [
    { key: 'variant', label: 'variant', type: 'select', default: 'vaswani',
      options: [['vaswani', 'Vaswani'], ['tensor2tensor', 'tensor2tensor'], ['fairseq', 'fairseq']] },
    seqField('positions', 64, 1024),
    { key: 'd_model', label: 'd_model', type: 'int', default: 64, min: 1, max: 1024 },
    OFFSET_FIELD,
    { key: 'base', label: 'base', type: 'number', default: 10000, min: 1.000001, visible: variantIs('vaswani', 'fairseq') },
    { key: 'min_ts', label: 'min timescale', type: 'number', default: 1, min: 1e-9, visible: variantIs('tensor2tensor') },
    { key: 'max_ts', label: 'max timescale', type: 'number', default: 10000, min: 1e-9, visible: variantIs('tensor2tensor') },
    { key: 'padding_idx', label: 'padding_idx', type: 'int', default: 1, min: 0, max: 2 ** 31 - 1,
      visible: variantIs('fairseq') },
  ];
}

function learnedFields(models) {
  return [modelField(models, 'learned'), seqField('positions', 64, 1024), OFFSET_FIELD];
}

const ROPE_SCALINGS = [['none', 'none'], ['linear', 'linear'], ['dynamic_ntk', 'dynamic NTK'],
  ['yarn', 'YaRN'], ['llama3', 'llama3'], ['longrope', 'LongRoPE']];
const scalingIs = (...names) => (v) => names.includes(v.scaling);

function ropeFields() {
  return [
    seqField('positions', 64, 512),
    { key: 'head_dim', label: 'head_dim', type: 'int', default: 64, min: 2, max: 512 },
    { key: 'theta', label: 'θ', type: 'number', default: 10000, min: 1.000001 },
    { key: 'rotary_dim', label: 'rotary_dim (0: all)', type: 'int', default: 0, min: 0, max: 512 },
    { key: 'layout', label: 'layout', type: 'select', default: 'half_split',
      options: [['half_split', 'half-split (NeoX)'], ['interleaved', 'interleaved (GPT-J)']] },
    OFFSET_FIELD,
    { key: 'scaling', label: 'scaling', type: 'select', default: 'none', options: ROPE_SCALINGS },
    { key: 'factor', label: 'factor', type: 'number', default: 4, min: 1e-6, visible: (v) => v.scaling !== 'none' },
    { key: 'original_max', label: 'original max positions', type: 'int', default: 32, min: 1,
      visible: scalingIs('dynamic_ntk', 'yarn', 'llama3', 'longrope') },
    { key: 'beta_fast', label: 'β fast', type: 'number', default: 32, min: 0, visible: scalingIs('yarn') },
    { key: 'beta_slow', label: 'β slow', type: 'number', default: 1, min: 0, visible: scalingIs('yarn') },
    { key: 'low_freq', label: 'low freq factor', type: 'number', default: 1, min: 0, visible: scalingIs('llama3') },
    { key: 'high_freq', label: 'high freq factor', type: 'number', default: 4, min: 0, visible: scalingIs('llama3') },
    { key: 'max_positions', label: 'max positions', type: 'int', default: 128, min: 1, visible: scalingIs('longrope') },
    { key: 'attention_factor', label: 'attention factor', type: 'text', default: '',
      title: 'empty: the scaling\'s own default', visible: scalingIs('yarn', 'longrope') },
    { key: 'short', label: 'short factors', type: 'text', default: '',
      title: 'r/2 comma-separated divisors; empty: all 1', visible: scalingIs('longrope') },
    { key: 'long', label: 'long factors', type: 'text', default: '',
      title: 'r/2 comma-separated divisors; empty: a ramp from 1 to factor', visible: scalingIs('longrope') },
  ];
}

function alibiFields() {
  return [
    { key: 'heads', label: 'heads', type: 'int', default: 8, min: 1, max: 64 },
    { key: 'max_bias', label: 'max bias', type: 'number', default: 8, min: 1e-6 },
    seqField('q_len', 32, 256), kvField, causalField(true),
  ];
}

function t5Fields(models) {
  const inline = (v) => v.source === 'inline';
  return [
    { key: 'source', label: 'table', type: 'select', default: 'inline',
      options: [['inline', 'inline: bucket index'], ['model', 'a model\'s learned table']] },
    modelField(models, 't5', (v) => v.source === 'model'),
    { key: 'num_buckets', label: 'buckets', type: 'int', default: 32, min: 2, max: 1024, visible: inline },
    { key: 'max_distance', label: 'max distance', type: 'int', default: 128, min: 1, max: 1e6, visible: inline },
    { key: 'bidirectional', label: 'bidirectional', type: 'bool', default: true, visible: inline },
    seqField('q_len', 48, 256), { ...kvField, default: 48 }, causalField(false),
  ];
}

function copeFields(models) {
  const throughSdpa = (v) => v.source === 'sdpa';
  return [
    { key: 'source', label: 'through', type: 'select', default: 'sdpa',
      options: [['sdpa', 'attnserve.sdpa (random q, k, v)'], ['model', 'a model']] },
    modelField(models, 'cope', (v) => v.source === 'model'),
    seqField('sequence', 32, 256),
    { key: 'heads', label: 'heads', type: 'int', default: 2, min: 1, max: 16, visible: throughSdpa },
    { key: 'head_dim', label: 'head_dim', type: 'int', default: 16, min: 1, max: 256, visible: throughSdpa },
    { key: 'npos_max', label: 'npos_max', type: 'int', default: 16, min: 1, max: 4096, visible: throughSdpa },
    SEED_FIELD,
  ];
}

const zeros = (n) => new Array(n).fill(0);

function fp32(name, shape, data) {
  return { name, datatype: 'FP32', shape, data };
}

// Parses a comma-separated list of numbers; throws naming the field when one is not a number.
function numberList(text, label) {
  const values = text.split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  if (values.some((v) => !Number.isFinite(v))) throw new Error(`${label}: "${text}" is not a list of numbers`);
  return values;
}

function optionalNumber(text, label) {
  if (text.trim() === '') return undefined;
  const value = Number(text);
  if (!Number.isFinite(value)) throw new Error(`${label}: "${text}" is not a number`);
  return value;
}

function sinusoidalEncoding(v) {
  const sinusoidal = { variant: v.variant.toUpperCase() };
  if (v.variant === 'tensor2tensor') {
    sinusoidal.min_timescale = v.min_ts;
    sinusoidal.max_timescale = v.max_ts;
  } else {
    sinusoidal.base = v.base;
  }
  if (v.variant === 'fairseq') sinusoidal.padding_idx = v.padding_idx;
  return { sinusoidal };
}

function withAttentionFactor(scaling, v) {
  const attention = optionalNumber(v.attention_factor, 'attention factor');
  return attention === undefined ? scaling : { ...scaling, attention_factor: attention };
}

// The RoPE scaling field of the RopeEncoding message, e.g. { yarn: {…} }; {} for none. LongRoPE's
// factor lists, when left empty, are made up here so the scaling can be tried at all: short
// factors 1 (no change while the sequence fits), long factors a ramp from 1 (fastest pair) to
// `factor` (slowest pair).
function ropeScalingMessage(v, pairs) {
  const L0 = v.original_max;
  switch (v.scaling) {
    case 'linear':
      return { linear: { factor: v.factor } };
    case 'dynamic_ntk':
      return { dynamic_ntk: { factor: v.factor, original_max_positions: L0 } };
    case 'yarn':
      return { yarn: withAttentionFactor({ factor: v.factor, original_max_positions: L0,
        beta_fast: v.beta_fast, beta_slow: v.beta_slow }, v) };
    case 'llama3':
      return { llama3: { factor: v.factor, low_freq_factor: v.low_freq, high_freq_factor: v.high_freq,
        original_max_positions: L0 } };
    case 'longrope': {
      const ramp = Array.from({ length: pairs }, (_, k) => 1 + ((v.factor - 1) * k) / Math.max(1, pairs - 1));
      return { longrope: withAttentionFactor({
        short_factor: v.short ? numberList(v.short, 'short factors') : new Array(pairs).fill(1),
        long_factor: v.long ? numberList(v.long, 'long factors') : ramp,
        original_max_positions: L0,
        max_positions: v.max_positions,
      }, v) };
    }
    default:
      return {};
  }
}

function ropeEncoding(v) {
  const rotary = v.rotary_dim || v.head_dim;
  const rope = { theta: v.theta, layout: v.layout.toUpperCase(), ...ropeScalingMessage(v, Math.floor(rotary / 2)) };
  if (v.rotary_dim) rope.rotary_dim = v.rotary_dim;
  return { rope };
}

// r_i · r_j for the rows of a [n, width] matrix.
function gram(vectors, n, width) {
  const out = new Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let dot = 0;
      for (let d = 0; d < width; d++) dot += vectors[i * width + d] * vectors[j * width + d];
      out[i * n + j] = dot;
      out[j * n + i] = dot;
    }
  }
  return out;
}

const queryKeyAxes = {
  rowTitle: 'query index i', colTitle: 'key index j', rowName: 'q', colName: 'k',
};

// One map per head of the answer's bias [heads, q_len, kv_len].
function biasMaps(answer, scale, headTitle) {
  return createHeadMaps(answer.output('bias'), { scale, nullText: MASKED_BIAS, ...queryKeyAxes }, headTitle);
}

// The planners: each turns a family's settings into the request for the service and how to draw
// its answer, { model, body, draw(answer) → { maps, note } } (answer: infer()'s outputs).

// Encode of an all-zero input: what comes back is the position table itself.
function tablePlan(v, dModel, parameters, title) {
  if (v.offset) parameters.position_offset = v.offset;
  return {
    model: 'attnserve.encode',
    body: { parameters, inputs: [fp32('input', [1, v.seq, dModel], zeros(v.seq * dModel))] },
    draw: (answer) => ({
      maps: [createHeatmap({
        title, rows: v.seq, cols: dModel, values: answer.output('output').data, scale: 'diverging',
        rowTitle: 'position', colTitle: 'dimension', rowName: 'pos', colName: 'dim',
        rowStart: v.offset, width: 900, height: 420, square: false,
      })],
      note: `Encode of zeros [1, ${v.seq}, ${dModel}] at positions ${v.offset}…${v.offset + v.seq - 1}.`,
    }),
  };
}

function planSinusoidal(v) {
  return tablePlan(v, v.d_model, { encoding: JSON.stringify(sinusoidalEncoding(v)) },
    `Sinusoidal (${v.variant}) table P[position, dimension]`);
}

function planLearned(v, models) {
  return tablePlan(v, modelShape(modelConfig(models, v.model)).dModel, { model: v.model },
    `${v.model}: learned table E[position, dimension]`);
}

function drawRope(v, rotated) {
  const scores = gram(rotated, v.seq, v.head_dim);
  const common = { rows: v.seq, scale: 'diverging', rowStart: v.offset, rowName: 'pos' };
  return {
    maps: [
      createHeatmap({ ...common, title: 'Rotated all-ones vectors r_p (the service\'s Encode output)',
        cols: v.head_dim, values: rotated, rowTitle: 'position', colTitle: 'dimension',
        colName: 'dim', width: 640, height: 420, square: false }),
      // Sequential over the data's range: the pattern is a score whose structure (the
      // diagonals) matters, and centring at zero would wash it out when all are positive.
      createHeatmap({ ...common, scale: 'sequential', title: 'Relative score pattern r_i · r_j (computed here)',
        cols: v.seq, values: scores, rowTitle: 'position i', colTitle: 'position j',
        rowName: 'i', colName: 'j', colStart: v.offset, width: 420 }),
    ],
    note: `The all-ones vector has |v|² = head_dim = ${v.head_dim}; r_i · r_i = ${scores[0].toPrecision(4)} here ` +
      '(the square of the attention factor times that, for YaRN and LongRoPE). ' +
      (v.scaling === 'dynamic_ntk' ? `Dynamic NTK uses the request's length, position ${v.offset + v.seq - 1} + 1, against original max positions ${v.original_max}.` : ''),
  };
}

function planRope(v) {
  const parameters = { encoding: JSON.stringify(ropeEncoding(v)), head_dim: v.head_dim };
  if (v.offset) parameters.position_offset = v.offset;
  return {
    model: 'attnserve.encode',
    body: { parameters, inputs: [fp32('input', [1, v.seq, v.head_dim], new Array(v.seq * v.head_dim).fill(1))] },
    draw: (answer) => drawRope(v, answer.output('output').data),
  };
}

// The last query sits at the last key's position, so its bias to the key before is −m.
function alibiHeadTitle(h, values, rows, cols) {
  if (cols < 2) return `head ${h}`;
  const slope = -values[(rows - 1) * cols + cols - 2];
  return `head ${h} · m = ${slope.toPrecision(4)}`;
}

function planAlibi(v) {
  return {
    model: 'attnserve.position_bias',
    body: { parameters: { encoding: JSON.stringify({ alibi: { max_bias: v.max_bias } }), num_heads: v.heads,
      q_len: v.seq, kv_len: v.kv_len, causal: v.causal } },
    draw: (answer) => ({
      maps: biasMaps(answer, 'diverging', alibiHeadTitle),
      note: `PositionBias of ALiBi, ${v.heads} heads, q_len ${v.seq}, kv_len ${v.kv_len}${v.causal ? ', causal' : ''}.`,
    }),
  };
}

function planT5FromModel(v) {
  return {
    model: 'attnserve.position_bias',
    body: { parameters: { model: v.model, q_len: v.seq, kv_len: v.kv_len, causal: v.causal } },
    draw: (answer) => ({
      maps: biasMaps(answer, 'diverging', (h) => `${v.model} head ${h}`),
      note: `PositionBias of ${v.model}'s learned table, q_len ${v.seq}, kv_len ${v.kv_len}.`,
    }),
  };
}

// One head with the inline table whose value for bucket b is b: every head would be the same.
function planT5Inline(v) {
  const t5 = { num_buckets: v.num_buckets, max_distance: v.max_distance, bidirectional: v.bidirectional };
  return {
    model: 'attnserve.position_bias',
    body: {
      parameters: { encoding: JSON.stringify({ t5 }), num_heads: 1, q_len: v.seq, kv_len: v.kv_len, causal: v.causal },
      inputs: [fp32('t5_table', [v.num_buckets, 1], Array.from({ length: v.num_buckets }, (_, b) => b))],
    },
    draw: (answer) => ({
      maps: biasMaps(answer, 'sequential', () => `T5 bucket index of each (query, key) pair, ${v.num_buckets} buckets`),
      note: `Inline t5_table [${v.num_buckets}, 1] whose value for bucket b is b: each cell's value is its bucket index ` +
        `(${v.bidirectional ? 'bidirectional' : 'causal'} buckets, max distance ${v.max_distance}).`,
    }),
  };
}

function planT5(v) {
  return v.source === 'model' ? planT5FromModel(v) : planT5Inline(v);
}

// CoPE's attention probabilities for random inputs from the seed; `source` ends the note.
function copePlan(v, model, body, source) {
  return {
    model,
    body: { ...body, outputs: [{ name: 'attention' }] },
    draw: (answer) => ({
      maps: createHeadMaps(answer.output('attention'), { scale: 'sequential', ...queryKeyAxes }, (h) => `CoPE attention, head ${h}`),
      note: `Causal attention probabilities with CoPE, seed ${v.seed}${source}`,
    }),
  };
}

function planCopeModel(v, models) {
  const { dModel } = modelShape(modelConfig(models, v.model));
  const rng = createRng(v.seed);
  return copePlan(v, v.model, {
    parameters: { causal: true, return_attention: true },
    inputs: [fp32('input', [1, v.seq, dModel], rng.normals(v.seq * dModel))],
  }, ` through ${v.model}.`);
}

// Through attnserve.sdpa: q, k, v and the position embeddings all drawn from the seed.
function planCopeSdpa(v) {
  const shape = [1, v.heads, v.seq, v.head_dim];
  const n = v.heads * v.seq * v.head_dim;
  const rng = createRng(v.seed);
  return copePlan(v, 'attnserve.sdpa', {
    parameters: { encoding: JSON.stringify({ cope: { npos_max: v.npos_max } }), causal: true, return_attention: true },
    inputs: [fp32('q', shape, rng.normals(n)), fp32('k', shape, rng.normals(n)), fp32('v', shape, rng.normals(n)),
      fp32('cope_pos_emb', [v.npos_max, v.head_dim], rng.normals(v.npos_max * v.head_dim))],
  }, `: q, k, v [1, ${v.heads}, ${v.seq}, ${v.head_dim}] and cope_pos_emb [${v.npos_max}, ${v.head_dim}] standard normal.`);
}

function planCope(v, models) {
  return v.source === 'model' ? planCopeModel(v, models) : planCopeSdpa(v);
}

const FAMILIES = {
  sinusoidal: {
    label: 'Sinusoidal', fields: sinusoidalFields, plan: planSinusoidal,
    description: 'A fixed table added to the embeddings. The map is the service\'s Encode of an all-zero input [1, positions, d_model]: what comes back is the table P[position, dimension] itself. Rows are positions, columns are dimensions; blue is negative, red positive.',
  },
  learned: {
    label: 'Learned absolute', fields: learnedFields, plan: planLearned,
    description: 'A learned table E[position, dimension] (the model\'s position_embeddings.weight), read through Encode of an all-zero input on the model. The demo model\'s table is seeded random numbers, so its picture is noise.',
  },
  rope: {
    label: 'RoPE', fields: ropeFields, plan: planRope,
    description: 'RoPE rotates each pair of a head\'s dimensions by an angle proportional to the position. The first map is Encode of an all-ones vector [1, positions, head_dim] (one head): the rotated vector r_p at each position. The second is their relative score pattern r_i · r_j, computed here from the service\'s vectors: it depends only on j − i, so it is constant along diagonals.',
  },
  alibi: {
    label: 'ALiBi', fields: alibiFields, plan: planAlibi,
    description: 'ALiBi adds −m·distance to the attention scores, one slope m per head. Each map is the bias [q_len, kv_len] of one head from PositionBias, bottom-right aligned: query i sits at position kv_len − q_len + i, key j at position j. Grey cells are masked (−∞). The slope in each title is read from the service\'s numbers.',
  },
  t5: {
    label: 'T5 relative bias', fields: t5Fields, plan: planT5,
    description: 'T5 bins the relative distance j − i into buckets and adds a learned per-head bias for each bucket. With the inline table, bucket b\'s value is b, so the map shows the bucket index of every (query, key) pair: exact buckets near the diagonal, logarithmic ones farther out. With a model, each map is one head\'s bias.',
  },
  cope: {
    label: 'CoPE', fields: copeFields, plan: planCope,
    description: 'CoPE counts positions by content: gates σ(q·k) summed over the causal window give each key a fractional position, whose interpolated embedding adds to the score. There is no fixed map, so this shows its attention probabilities (rows: queries, columns: keys) for random inputs from the seed.',
  },
};

// The select only takes these names, so FAMILIES[family] is always one of them.
const FAMILY_FIELD = {
  key: 'family', label: 'Family', type: 'select', default: 'sinusoidal',
  options: Object.entries(FAMILIES).map(([name, family]) => [name, family.label]),
};

export function create(context) {
  const intro = element('div', 'intro');
  intro.innerHTML = `<h1>Encodings</h1>
    <p>Pick an encoding family and its parameters; the maps are drawn from the service's own
    numbers (Encode, PositionBias and ScaledDotProductAttention through the KServe v2 operation
    models). Hover a cell for its row, column and value.</p>`;
  const controls = createControls((key, text) => {
    // A new family starts from its own defaults.
    if (key === 'family') context.navigate({ family: text });
    else context.changeSettings({ [key]: text });
  });
  const toolbar = element('div', 'toolbar');
  toolbar.append(controls.element);
  const description = element('p', 'description');
  const note = element('p', 'note');
  const maps = element('div', 'heatmap-grid');
  context.root.append(intro, toolbar, description, note, maps);

  // Reads the settings from the hash, writes them back canonical and shows them in the form.
  function showSettings(params, models) {
    const { family } = readFields([FAMILY_FIELD], params);
    const fields = [FAMILY_FIELD, ...FAMILIES[family].fields(models)];
    const values = readFields(fields, params);
    const canonical = fieldParams(fields, values);
    context.navigate(canonical, { replace: true });
    controls.show(fields, values);
    description.textContent = FAMILIES[family].description;
    // A model field is shown (so the case needs one) but no served model has this encoding.
    if (canonical.model === '') throw new Error(`no served model has a ${family} encoding`);
    return { family, values };
  }

  return {
    update(params) {
      context.load(async (signal) => {
        const models = context.cachedModels() ?? (await context.models(signal));
        note.textContent = '';
        replaceMaps(maps);
        const { family, values } = showSettings(params, models);
        const request = FAMILIES[family].plan(values, models);
        const started = performance.now();
        const answer = await infer(request.model, request.body, signal);
        const elapsed = performance.now() - started;
        const drawn = request.draw(answer);
        note.textContent = `${drawn.note} POST /v2/models/${request.model}/infer answered in ${elapsed.toFixed(0)} ms.`;
        replaceMaps(maps, drawn.maps);
      });
    },
    dispose() {},
  };
}
