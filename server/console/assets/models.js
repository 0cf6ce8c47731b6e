// Models page (#/models?refresh=2): every model with its configuration and state, live request
// figures from successive metrics snapshots, and the server's shared compute resources.
// Hash parameters: refresh — seconds between snapshots (0 pauses the refresh; default 2;
// at least 0.25).

import { fetchMetrics } from './api.js';
import { encodingSummary, modelShape } from './config.js';
import { createControls, fieldParams, readFields } from './controls.js';
import { element } from './dom.js';
import { gauge, modelFigures } from './metrics.js';

const FIELDS = [
  { key: 'refresh', label: 'refresh every (s; 0 pauses)', type: 'number', default: 2, min: 0, max: 3600 },
];
// The shortest refresh interval taken, whatever the hash asks: each refresh is two requests.
const MIN_REFRESH_S = 0.25;

const COLUMNS = ['Model', 'State', 'd_model', 'Heads', 'KV heads', 'head_dim', 'Encoding',
  'Requests/s', 'Errors/s', 'p50', 'p99', 'Queue wait'];

// The page's settings from the hash: a refresh interval between 0 (paused) and the minimum is
// taken as the minimum, so the form and the address show the interval actually used.
function readSettings(params) {
  const { refresh } = readFields(FIELDS, params);
  return { refresh: refresh === 0 ? 0 : Math.max(MIN_REFRESH_S, refresh) };
}

// Three significant digits in µs, ms or s. The unit is chosen after rounding, so 0.99975 s reads
// "1.00 s", not "1.00e+3 ms".
function formatSeconds(seconds) {
  if (seconds === null) return '—';
  const rounded = Number(seconds.toPrecision(3));
  if (rounded < 1e-3) return `${(rounded * 1e6).toPrecision(3)} µs`;
  if (rounded < 1) return `${(rounded * 1e3).toPrecision(3)} ms`;
  return `${rounded.toPrecision(3)} s`;
}

function formatRate(perSecond) {
  return perSecond === null ? '—' : `${perSecond.toFixed(2)}/s`;
}

function formatBytes(bytes) {
  if (bytes === null) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

function formatCount(value) {
  return value === null ? '—' : String(value);
}

function tile(field, label, value, hint) {
  const box = element('div', 'tile');
  box.dataset.field = field;
  box.title = hint;
  box.append(element('div', 'tile-value', value), element('div', 'tile-label', label));
  return box;
}

// The server-wide figures: the compute queue and workers are shared by every model.
function serverTiles(snapshot) {
  const g = (name) => gauge(snapshot, name);
  const budget = g('attnserve_request_memory_budget_bytes');
  const tiles = element('div', 'tiles');
  tiles.append(
    tile('workers', 'compute workers busy',
      `${formatCount(g('attnserve_compute_busy_workers'))} / ${formatCount(g('attnserve_compute_workers'))}`,
      'workers computing a request or batch / all compute workers'),
    tile('queue', 'waiting / queue capacity',
      `${formatCount(g('attnserve_compute_waiting_requests'))} / ${formatCount(g('attnserve_compute_queue_capacity'))}`,
      'requests waiting for a compute worker (all models share the queue) / its capacity'),
    tile('memory', 'request memory held / budget',
      `${formatBytes(g('attnserve_request_memory_bytes'))} / ${budget ? formatBytes(budget) : 'no budget'}`,
      'bytes held by requests in flight / the --max_request_memory_bytes budget'),
    tile('decode_streams', 'open Decode streams', formatCount(g('attnserve_decode_streams')),
      'bidirectional Decode streams holding a K/V cache'),
    tile('inflight', 'requests in flight', formatCount(g('attnserve_inflight_requests')),
      'requests admitted and not yet answered'),
  );
  return tiles;
}

function stateCell(model) {
  const cell = element('td', 'state');
  cell.dataset.state = model.state;
  cell.append(element('span', `badge badge-${model.state}`, model.state));
  if (model.reason) cell.append(element('div', 'reason', model.reason));
  return cell;
}

function figureCell(field, value, text) {
  const cell = element('td', 'num', text);
  cell.dataset.field = field;
  if (value !== null) cell.dataset.value = String(value);
  return cell;
}

function modelRow(model, figures) {
  const row = element('tr');
  row.dataset.model = model.name;
  const nameCell = element('td', 'model-name');
  const config = model.config;
  if (model.state === 'failed') {
    nameCell.append(element('span', '', model.name));
  } else {
    // A served model opens in the attention explorer (the whole row is clickable too).
    const link = element('a', '', model.name);
    link.href = `#/attention?model=${encodeURIComponent(model.name)}`;
    nameCell.append(link);
    row.classList.add('clickable');
    row.addEventListener('click', (event) => {
      if (event.target !== link) location.hash = link.getAttribute('href');
    });
  }
  if (config?.description) nameCell.append(element('div', 'description', config.description));
  row.append(nameCell, stateCell(model));
  if (config) {
    const shape = modelShape(config);
    row.append(element('td', 'num', String(shape.dModel)), element('td', 'num', String(shape.heads)),
      element('td', 'num', String(shape.kvHeads)), element('td', 'num', String(shape.headDim)),
      element('td', '', encodingSummary(config.encoding, config)));
  } else {
    for (let i = 0; i < 5; i++) row.append(element('td', 'num', '—'));
  }
  row.append(
    figureCell('rate', figures.rate, formatRate(figures.rate)),
    figureCell('errors', figures.errors, formatRate(figures.errors)),
    figureCell('p50', figures.p50, formatSeconds(figures.p50)),
    figureCell('p99', figures.p99, formatSeconds(figures.p99)),
    figureCell('queue_wait', figures.queueWait, formatSeconds(figures.queueWait)),
  );
  return row;
}

function modelsTable(models, before, after) {
  const table = element('table', 'models-table');
  const head = element('tr');
  for (const column of COLUMNS) head.append(element('th', '', column));
  table.append(element('thead'));
  table.tHead.append(head);
  const body = element('tbody');
  for (const model of models) body.append(modelRow(model, modelFigures(before, after, model.name)));
  table.append(body);
  return table;
}

export function create(context) {
  const intro = element('div', 'intro');
  intro.innerHTML = `<h1>Models</h1>
    <p>Every model the server knows, with its layer shape and positional encoding. The live
    figures come from the server's metrics, sampled every few seconds: requests and errors per
    second over the last interval (both doors, all RPCs), the 50th and 99th percentile of the
    time from admission to answer (interpolated inside the histogram's buckets, as Prometheus'
    <code>histogram_quantile</code> does; "—" when no request finished in the interval), and the
    mean wait for a compute worker. The tiles are server-wide: one compute queue and one memory
    budget serve all models. Click a model to explore its attention.</p>`;
  const controls = createControls((key, text) => context.changeSettings({ [key]: text }));
  const tiles = element('div');
  const status = element('div', 'status-row');
  status.append(tiles, controls.element);
  const table = element('div', 'table-wrap');
  const updated = element('p', 'updated');
  context.root.append(intro, status, table, updated);

  let settings = null;
  let previous = null;  // the last metrics snapshot, the start of the next window
  let timer = null;

  async function refresh(quiet) {
    const outcome = await context.load(async (signal) => {
      const [models, snapshot] = await Promise.all([context.models(signal), fetchMetrics(signal)]);
      tiles.replaceChildren(serverTiles(snapshot));
      table.replaceChildren(modelsTable(models, previous, snapshot));
      previous = snapshot;
      updated.textContent = `Updated ${new Date(snapshot.time_seconds * 1000).toLocaleTimeString()}` +
        (settings.refresh === 0 ? ' (refresh paused)' : `; refreshing every ${settings.refresh} s`);
    }, { quiet });
    // A failed refresh is shown and retried; a superseded one, or one refused for want of a
    // token, schedules nothing.
    if (outcome === 'ready' || outcome === 'error') schedule();
  }

  function schedule() {
    clearTimeout(timer);
    if (settings.refresh === 0) return;
    timer = setTimeout(() => refresh(true), settings.refresh * 1000);
  }

  return {
    update(params) {
      settings = readSettings(params);
      context.navigate(fieldParams(FIELDS, settings), { replace: true });
      controls.show(FIELDS, settings);
      clearTimeout(timer);
      refresh(previous !== null);
    },
    dispose() {
      clearTimeout(timer);
    },
  };
}
