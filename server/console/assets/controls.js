// Page settings described once as fields, read from the URL hash (with defaults and bounds, so a
// hand-edited link still gives a valid case) and shown as a form whose changes go back to the hash.
//
// A field: { key, label, type: 'int' | 'number' | 'select' | 'bool' | 'text', default,
//   min, max (numbers), options: [[value, label], …] (select), visible(values) (shown when true),
//   title (a hint on hover) }.

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

// The visible fields' values as hash parameters: booleans as 1/0.
export function fieldParams(fields, values, prefix = '') {
  const out = {};
  for (const field of fields) {
    if (field.visible && !field.visible(values)) continue;
    const value = values[field.key];
    out[prefix + field.key] = field.type === 'bool' ? (value ? '1' : '0') : String(value);
  }
  return out;
}

function control(field, value, onChange) {
  let input;
  if (field.type === 'select') {
    input = document.createElement('select');
    for (const [optionValue, label] of field.options) {
      const option = new Option(label, optionValue, false, optionValue === value);
      input.append(option);
    }
    input.addEventListener('change', () => onChange(field.key, input.value));
  } else if (field.type === 'bool') {
    input = document.createElement('input');
    input.type = 'checkbox';
    input.checked = value;
    input.addEventListener('change', () => onChange(field.key, input.checked));
  } else {
    input = document.createElement('input');
    input.type = field.type === 'text' ? 'text' : 'number';
    if (field.type === 'int') input.step = '1';
    if (field.type === 'number') input.step = 'any';
    if (field.min !== undefined) input.min = String(field.min);
    if (field.max !== undefined) input.max = String(field.max);
    input.value = String(value);
    input.addEventListener('change', () => onChange(field.key, parseField(field, input.value)));
  }
  input.name = field.key;
  return input;
}

// A row of labelled controls for the visible fields; onChange(key, value) on each change.
export function renderControls(fields, values, onChange) {
  const form = document.createElement('form');
  form.className = 'controls';
  form.addEventListener('submit', (event) => event.preventDefault());
  for (const field of fields) {
    if (field.visible && !field.visible(values)) continue;
    const label = document.createElement('label');
    label.className = field.type === 'bool' ? 'control control-bool' : 'control';
    if (field.title) label.title = field.title;
    const text = document.createElement('span');
    text.textContent = field.label;
    label.append(text, control(field, values[field.key], onChange));
    form.append(label);
  }
  return form;
}
