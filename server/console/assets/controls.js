// Page settings described once as fields, read from the URL hash (with defaults and bounds, so a
// hand-edited link still gives a valid case) and shown as a form whose changes go back to the hash.
//
// A field: { key, label, type: 'int' | 'number' | 'select' | 'bool' | 'text', default,
//   min, max (numbers), options: [[value, label], …] (select), visible(values) (shown when true),
//   title (a hint on hover) }.

import { element } from './dom.js';

// Fields more than one page has.
export const SEED_FIELD = { key: 'seed', label: 'seed', type: 'int', default: 1, min: 0, max: 2 ** 31 - 1 };
export const OFFSET_FIELD = { key: 'offset', label: 'position offset', type: 'int', default: 0, min: 0, max: 1e6 };

function parseField(field, raw) {
  if (raw === null || raw === undefined) return field.default;
  switch (field.type) {
    case 'int':
    case 'number': {
      const value = field.type === 'int' ? Number.parseInt(raw, 10) : Number.parseFloat(raw);
      if (!Number.isFinite(value)) return field.default;
      return Math.min(field.max ?? Infinity, Math.max(field.min ?? -Infinity, value));
    }
    case 'bool':
      if (raw === '1' || raw === 'true') return true;
      if (raw === '0' || raw === 'false') return false;
      return field.default;
    case 'select':
      return field.options.some(([value]) => value === raw) ? raw : field.default;
    default:
      return raw;
  }
}

// The fields' values from URLSearchParams, each under prefix + key.
export function readFields(fields, params, prefix = '') {
  const values = {};
  for (const field of fields) values[field.key] = parseField(field, params.get(prefix + field.key));
  return values;
}

// A value as the hash writes it: booleans as 1/0.
function paramText(field, value) {
  if (field.type === 'bool') return value ? '1' : '0';
  return String(value);
}

function isVisible(field, values) {
  return !field.visible || field.visible(values);
}

// The visible fields' values as hash parameters.
export function fieldParams(fields, values, prefix = '') {
  const out = {};
  for (const field of fields) {
    if (isVisible(field, values)) out[prefix + field.key] = paramText(field, values[field.key]);
  }
  return out;
}

function createInput(field) {
  if (field.type === 'select') {
    const select = element('select');
    for (const [value, label] of field.options) select.append(new Option(label, value));
    return select;
  }
  const input = element('input');
  if (field.type === 'bool') {
    input.type = 'checkbox';
    return input;
  }
  input.type = field.type === 'text' ? 'text' : 'number';
  if (field.type === 'int') input.step = '1';
  if (field.type === 'number') input.step = 'any';
  if (field.min !== undefined) input.min = String(field.min);
  if (field.max !== undefined) input.max = String(field.max);
  return input;
}

// Sets an input to a value, leaving it alone when it already shows it (an input being typed in
// keeps its text and caret).
function showValue(input, field, value) {
  if (field.type === 'bool') input.checked = value;
  else if (input.value !== String(value)) input.value = String(value);
}

function readInput(input, field) {
  if (field.type === 'bool') return input.checked;
  if (field.type === 'select') return input.value;
  return parseField(field, input.value);
}

// What decides the form's layout: the visible fields and their choices, not their values.
function formLayout(fields, values) {
  return JSON.stringify(fields.filter((field) => isVisible(field, values))
    .map((field) => [field.key, field.type, field.label, field.title, field.options]));
}

// A row of labelled controls for fields. show(fields, values) draws it; it rebuilds the inputs only
// when the layout changes (a field shown or hidden, other choices) and otherwise only sets their
// values, so that the control in use keeps its focus. onChange(key, text) on each change, with
// the value as its hash parameter's text.
export function createControls(onChange) {
  const form = element('form', 'controls');
  form.addEventListener('submit', (event) => event.preventDefault());
  let layout = null;
  let fieldsByKey = new Map();

  function rebuild(fields, values) {
    form.replaceChildren();
    for (const field of fields) {
      if (!isVisible(field, values)) continue;
      const label = element('label', field.type === 'bool' ? 'control control-bool' : 'control');
      if (field.title) label.title = field.title;
      const input = createInput(field);
      input.name = field.key;
      input.addEventListener('change', () => {
        // Read with the field as last shown (its default may follow another panel's setting),
        // and show the value taken: a clamped number must show even when the hash stays the same.
        const current = fieldsByKey.get(field.key);
        const value = readInput(input, current);
        showValue(input, current, value);
        onChange(field.key, paramText(current, value));
      });
      label.append(element('span', '', field.label), input);
      form.append(label);
    }
  }

  return {
    element: form,
    show(fields, values) {
      const next = formLayout(fields, values);
      if (next !== layout) rebuild(fields, values);
      layout = next;
      fieldsByKey = new Map(fields.map((field) => [field.key, field]));
      for (const field of fields) {
        if (isVisible(field, values)) showValue(form.elements.namedItem(field.key), field, values[field.key]);
      }
    },
  };
}
