// Attention explorer (#/attention?model=…): runs a served model's attention layer on seeded
// random token embeddings with return_attention and draws each head's probabilities; with
// compare=1 a second panel B runs its own settings beside it.
//
// Hash parameters: model, seq, causal (1/0), cross (1/0: cross-attention on a context of kv_len
// tokens), kv_len, seed, offset (position_offset), compare (1/0); panel B's settings are the
// same keys prefixed with "b_" (b_model, b_seq, b_causal, …). A B setting absent from the hash
// follows panel A's, except b_causal, which defaults to the opposite of A's.

import { infer } from './api.js';
import { encodingSummary, modelShape } from './config.js';
import { createControls, fieldParams, OFFSET_FIELD, readFields, SEED_FIELD } from './controls.js';
import { element, showChildren } from './dom.js';
import { createHeadMaps, replaceMaps } from './heatmap.js';
import { createRng } from './prng.js';

const COMPARE_FIELD = { key: 'compare', label: 'side by side (panel B)', type: 'bool', default: false };
const B = 'b_';

function servedModels(models) {
  return models.filter((m) => m.state !== 'failed' && m.config);
}

function panelFields(models) {
  const names = servedModels(models).map((m) => m.name);
  const preferred = names.includes('demo-alibi') ? 'demo-alibi' : names[0] ?? '';
  return [
    { key: 'model', label: 'model', type: 'select', default: preferred, options: names.map((n) => [n, n]) },
    { key: 'seq', label: 'tokens', type: 'int', default: 16, min: 1, max: 256 },
    { key: 'causal', label: 'causal', type: 'bool', default: true },
    { key: 'cross', label: 'cross-attention', type: 'bool', default: false },
    { key: 'kv_len', label: 'context tokens', type: 'int', default: 16, min: 1, max: 256, visible: (v) => v.cross },
    SEED_FIELD,
    OFFSET_FIELD,
  ];
}

// Panel B's fields: A's values as defaults, causal toggled.
function panelBFields(fields, a) {
  return fields.map((f) => ({ ...f, default: f.key === 'causal' ? !a.causal : a[f.key] }));
}

// The inference request of a panel: the input (and context) drawn from the seed, in that order,
// so one seed always gives the same tokens.
function attentionRequest(settings, dModel) {
  const rng = createRng(settings.seed);
  const inputs = [{ name: 'input', datatype: 'FP32', shape: [1, settings.seq, dModel],
    data: rng.normals(settings.seq * dModel) }];
  if (settings.cross) {
    inputs.push({ name: 'context', datatype: 'FP32', shape: [1, settings.kv_len, dModel],
      data: rng.normals(settings.kv_len * dModel) });
  }
  const parameters = { causal: settings.causal, return_attention: true };
  if (settings.offset) parameters.position_offset = settings.offset;
  return { parameters, inputs, outputs: [{ name: 'attention' }] };
}

function describePanel(label, settings, config) {
  const shape = modelShape(config);
  const kv = settings.cross ? `cross-attention over ${settings.kv_len} context tokens` : 'self-attention';
  const gqa = shape.kvHeads !== shape.heads ? ` sharing ${shape.kvHeads} K/V heads` : '';
  return `${label ? `${label}: ` : ''}${settings.model} (${encodingSummary(config.encoding, config)}; ${shape.heads} heads${gqa}), ` +
    `${settings.seq} tokens, ${settings.causal ? 'causal' : 'bidirectional'}, ${kv}, seed ${settings.seed}` +
    (settings.offset ? `, positions from ${settings.offset}` : '');
}

// A panel's elements; its form reports changes through onChange(key, text).
function panelElement(className, onChange) {
  const panel = element('section', `panel ${className}`);
  const heading = element('h2');
  const controls = createControls(onChange);
  const toolbar = element('div', 'toolbar');
  toolbar.append(controls.element);
  const summary = element('p', 'note');
  const maps = element('div', 'heatmap-grid');
  panel.append(heading, toolbar, summary, maps);
  return { panel, heading, controls, summary, maps };
}

function drawPanel(view, label, settings, config, attention, compare) {
  const shape = modelShape(config);
  const group = shape.heads / shape.kvHeads;
  view.summary.textContent = describePanel(label, settings, config);
  const maps = createHeadMaps(attention, {
    scale: 'sequential', rowTitle: 'query position', colTitle: 'key position', rowName: 'q', colName: 'k',
    width: compare ? 120 : undefined,
  }, (h) => `${label ? `${label} · ` : ''}head ${h}${group > 1 ? ` (K/V head ${Math.floor(h / group)})` : ''}`);
  replaceMaps(view.maps, maps);
}

export function create(context) {
  const intro = element('div', 'intro');
  intro.innerHTML = `<h1>Attention</h1>
    <p>Runs a model's attention layer on random token embeddings (standard normal, drawn from the
    seed, so a seed always gives the same tokens) and shows each head's attention probabilities:
    row i is query i, column j is key j, and each row sums to 1. Causal attention hides keys
    after the query (bottom-right aligned when there are more keys than queries); cross-attention
    takes its keys from a separate context. All heads of a panel share one colour scale.
    Side by side compares two settings, e.g. causal against bidirectional, or two models'
    encodings.</p>`;
  const changeSetting = (prefix) => (key, text) => context.changeSettings({ [prefix + key]: text });
  const compareControls = createControls(changeSetting(''));
  const toolbar = element('div', 'toolbar');
  toolbar.append(compareControls.element);
  const panels = element('div', 'panels');
  const a = panelElement('panel-a', changeSetting(''));
  const b = panelElement('panel-b', changeSetting(B));
  context.root.append(intro, toolbar, panels);

  // Reads the settings from the hash, writes them back canonical and shows them in the forms.
  // Returns the cases to draw: [label, settings, panel view] for each panel shown.
  function showSettings(params, models) {
    const fields = panelFields(models);
    if (!fields[0].default) throw new Error('no model is being served');
    const settingsA = readFields(fields, params);
    const { compare } = readFields([COMPARE_FIELD], params);
    const fieldsB = panelBFields(fields, settingsA);
    const settingsB = readFields(fieldsB, params, B);
    // B's settings go into the hash only once set, so that the others keep following A.
    const explicitB = Object.fromEntries(Object.entries(fieldParams(fieldsB, settingsB, B))
      .filter(([key]) => params.has(key)));
    context.navigate({ ...fieldParams(fields, settingsA), ...fieldParams([COMPARE_FIELD], { compare }),
      ...(compare ? explicitB : {}) }, { replace: true });
    compareControls.show([COMPARE_FIELD], { compare });
    a.heading.textContent = compare ? 'Panel A' : '';
    a.controls.show(fields, settingsA);
    b.heading.textContent = 'Panel B';
    b.controls.show(fieldsB, settingsB);
    panels.classList.toggle('compare', compare);
    showChildren(panels, compare ? [a.panel, b.panel] : [a.panel]);
    return compare ? [['A', settingsA, a], ['B', settingsB, b]] : [['', settingsA, a]];
  }

  return {
    update(params) {
      context.load(async (signal) => {
        const models = context.cachedModels() ?? (await context.models(signal));
        const cases = showSettings(params, models);
        for (const view of [a, b]) {
          view.summary.textContent = '';
          replaceMaps(view.maps);
        }
        const configs = cases.map(([, s]) => models.find((m) => m.name === s.model).config);
        const answers = await Promise.all(cases.map(([, s], i) =>
          infer(s.model, attentionRequest(s, modelShape(configs[i]).dModel), signal)));
        cases.forEach(([label, s, view], i) =>
          drawPanel(view, label, s, configs[i], answers[i].output('attention'), cases.length > 1));
      });
    },
    dispose() {},
  };
}
