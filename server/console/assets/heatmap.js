// The heat map every page draws with: a <canvas> holding the cells (painted at one image pixel
// per cell and scaled up without smoothing, so a 512 × 512 map costs one drawImage) and the
// axes, a colour bar underneath, a title, and the shared hover tooltip (#heatmap-tooltip).
//
// createHeatmap(spec) returns the map's <figure>. What the test hook
// window.attnserveConsole.heatmaps() reports of a map is kept in a WeakMap keyed by its figure,
// so a map is forgotten with its figure, and the hook reads the figures in the document: exactly
// the maps on screen, in document order.

import { element } from './dom.js';

// Both colour maps are defined here by a few anchor colours of our own choosing, in OKLCh
// (lightness 0–1, chroma, hue in degrees), rather than copied from published tables: the
// anchors show each map's design at a glance, and one interpolation serves both. The anchors
// are joined by straight lines in OKLab, a space where equal distances look about equally
// different (interpolating in sRGB would bunch the visible change unevenly), and sampled into
// 256 sRGB entries. The lines between these anchors stay inside the sRGB gamut (oklabToSrgb
// clips any colour that would not).
// Sequential (probabilities, indices): dark violet through teal to pale yellow. Lightness rises
// throughout, so order reads from brightness alone (in grey, or with a colour-vision
// deficiency); the turning hue helps tell nearby levels apart.
const SEQUENTIAL_ANCHORS = [[0.28, 0.12, 295], [0.58, 0.09, 205], [0.93, 0.17, 108]];
// Diverging (signed values: encodings, biases): blue below zero, near-white at zero, red above.
// Both ends have the same lightness, so −x and +x look equally strong.
const DIVERGING_ANCHORS = [[0.45, 0.14, 255], [0.975, 0.005, 90], [0.45, 0.16, 27]];
// Cells whose value is null (the service writes non-finite numbers as null, e.g. a −∞ mask).
const MASKED_RGB = [190, 190, 190];

const MIN_CELL_PX = 3;
const MAX_CELL_PX = 32;
const FONT = '11px system-ui, sans-serif';
const TITLE_FONT = '12px system-ui, sans-serif';

function oklchToOklab([lightness, chroma, hueDegrees]) {
  const hue = (hueDegrees * Math.PI) / 180;
  return [lightness, chroma * Math.cos(hue), chroma * Math.sin(hue)];
}

// sRGB's transfer function: linear light in [0, 1] to the encoded value.
function srgbEncode(linear) {
  return linear <= 0.0031308 ? 12.92 * linear : 1.055 * linear ** (1 / 2.4) - 0.055;
}

// OKLab to sRGB in [0, 255], with the matrices of OKLab's definition (Björn Ottosson, 2020).
function oklabToSrgb([L, a, b]) {
  const l = (L + 0.3963377774 * a + 0.2158037573 * b) ** 3;
  const m = (L - 0.1055613458 * a - 0.0638541728 * b) ** 3;
  const s = (L - 0.0894841775 * a - 1.291485548 * b) ** 3;
  const linear = [
    4.0767416621 * l - 3.3077115913 * m + 0.2309699292 * s,
    -1.2684380046 * l + 2.6097574011 * m - 0.3413193965 * s,
    -0.0041960863 * l - 0.7034186147 * m + 1.707614701 * s,
  ];
  return linear.map((x) => 255 * srgbEncode(Math.min(1, Math.max(0, x))));
}

// 256 RGB triples, flat, from the anchors evenly spaced along the scale.
function buildTable(oklchAnchors) {
  const anchors = oklchAnchors.map(oklchToOklab);
  const table = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) {
    const t = (i / 255) * (anchors.length - 1);
    const lo = Math.min(Math.floor(t), anchors.length - 2);
    const f = t - lo;
    const lab = anchors[lo].map((from, c) => from + (anchors[lo + 1][c] - from) * f);
    table.set(oklabToSrgb(lab), i * 3);
  }
  return table;
}

const TABLES = { sequential: buildTable(SEQUENTIAL_ANCHORS), diverging: buildTable(DIVERGING_ANCHORS) };

const describers = new WeakMap();  // a map's <figure> → what the test hook reports of it

// The value as the tooltip shows it: 4 significant digits.
function formatValue(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return String(value);
  return value.toPrecision(4);
}

// Finite minimum and maximum of the values (nulls skipped); [0, 0] when there are none.
function finiteRange(values) {
  let min = Infinity;
  let max = -Infinity;
  for (const v of values) {
    if (v === null || !Number.isFinite(v)) continue;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return min <= max ? [min, max] : [0, 0];
}

// The colour scale's domain: the data range for a sequential map, symmetric about zero for a
// diverging one (so zero is always the neutral colour), unless the caller fixes it (to share
// one scale across the heads of a layer).
function colourDomain(spec, min, max) {
  if (spec.domain) return spec.domain;
  if (spec.scale === 'diverging') {
    const a = Math.max(Math.abs(min), Math.abs(max)) || 1;
    return [-a, a];
  }
  return min < max ? [min, max] : [min, min + 1];
}

// Largest integer cell size in [MIN_CELL_PX, MAX_CELL_PX] that fits `count` cells in `target` px.
function cellSize(target, count) {
  return Math.max(MIN_CELL_PX, Math.min(MAX_CELL_PX, Math.floor(target / count)));
}

// A 1-2-5 step between labelled ticks so that labels `minGap` px apart do not collide.
function tickStep(cellPx, minGap) {
  for (let scale = 1; ; scale *= 10) {
    for (const m of [1, 2, 5]) {
      if (m * scale * cellPx >= minGap) return m * scale;
    }
  }
}

function paintCells(values, rows, cols, table, [lo, hi]) {
  const image = new ImageData(cols, rows);
  const span = hi - lo || 1;
  for (let i = 0; i < rows * cols; i++) {
    const v = values[i];
    let rgb = MASKED_RGB;
    let offset = 0;
    if (v !== null && Number.isFinite(v)) {
      const t = Math.min(1, Math.max(0, (v - lo) / span));
      rgb = table;
      offset = Math.round(t * 255) * 3;
    }
    image.data[i * 4] = rgb[offset];
    image.data[i * 4 + 1] = rgb[offset + 1];
    image.data[i * 4 + 2] = rgb[offset + 2];
    image.data[i * 4 + 3] = 255;
  }
  const bitmap = element('canvas');
  bitmap.width = cols;
  bitmap.height = rows;
  bitmap.getContext('2d').putImageData(image, 0, 0);
  return bitmap;
}

// A canvas whose backing store has devicePixelRatio pixels per CSS pixel, drawn in CSS pixels.
function hiDpiCanvas(canvas, width, height) {
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext('2d');
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  return ctx;
}

function tooltipElement() {
  return document.getElementById('heatmap-tooltip');
}

// Hides the shared tooltip: the map it described is being replaced or left.
export function hideTooltip() {
  tooltipElement().hidden = true;
}

// Puts `figures` (heat maps) in place of the container's content.
export function replaceMaps(container, figures = []) {
  hideTooltip();
  container.replaceChildren(...figures);
}

// The figure's layout: cell sizes and the margins that hold tick labels and axis titles.
function layout(spec, measure) {
  const square = spec.square !== false;
  let cw = cellSize(spec.width ?? 480, spec.cols);
  let ch = cellSize(spec.height ?? spec.width ?? 480, spec.rows);
  if (square) cw = ch = Math.min(cw, ch);
  const rowLabelWidth = measure(String(spec.rowStart + spec.rows - 1));
  const left = Math.ceil(rowLabelWidth) + 8 + 16;  // labels, tick, gap, rotated axis title
  const top = 6;
  const bottom = 14 + 16 + 4;                      // labels, axis title
  const plotW = cw * spec.cols;
  const plotH = ch * spec.rows;
  return { cw, ch, left, top, plotW, plotH, width: left + plotW + 8, height: top + plotH + bottom };
}

function drawAxes(ctx, spec, L) {
  ctx.fillStyle = '#333';
  ctx.strokeStyle = '#666';
  ctx.font = FONT;
  ctx.lineWidth = 1;
  ctx.strokeRect(L.left - 0.5, L.top - 0.5, L.plotW + 1, L.plotH + 1);

  const colGap = ctx.measureText(String(spec.colStart + spec.cols - 1)).width + 8;
  const colStep = tickStep(L.cw, colGap);
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  for (let c = 0; c < spec.cols; c++) {
    if ((spec.colStart + c) % colStep !== 0) continue;
    const x = L.left + (c + 0.5) * L.cw;
    ctx.beginPath();
    ctx.moveTo(x, L.top + L.plotH);
    ctx.lineTo(x, L.top + L.plotH + 3);
    ctx.stroke();
    ctx.fillText(String(spec.colStart + c), x, L.top + L.plotH + 4);
  }
  const rowStep = tickStep(L.ch, 14);
  ctx.textAlign = 'right';
  ctx.textBaseline = 'middle';
  for (let r = 0; r < spec.rows; r++) {
    if ((spec.rowStart + r) % rowStep !== 0) continue;
    const y = L.top + (r + 0.5) * L.ch;
    ctx.beginPath();
    ctx.moveTo(L.left - 3, y);
    ctx.lineTo(L.left, y);
    ctx.stroke();
    ctx.fillText(String(spec.rowStart + r), L.left - 5, y);
  }

  ctx.font = TITLE_FONT;
  ctx.textAlign = 'center';
  ctx.textBaseline = 'bottom';
  ctx.fillText(spec.colTitle, L.left + L.plotW / 2, L.height - 2);
  ctx.save();
  ctx.translate(12, L.top + L.plotH / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textBaseline = 'middle';
  ctx.fillText(spec.rowTitle, 0, 0);
  ctx.restore();
}

function colourBar(spec, table, domain, min, max, width) {
  const bar = element('div', 'hm-colorbar');
  const canvas = element('canvas');
  const ctx = hiDpiCanvas(canvas, width, 10);
  for (let x = 0; x < width; x++) {
    const i = Math.round((x / Math.max(1, width - 1)) * 255) * 3;
    ctx.fillStyle = `rgb(${table[i]},${table[i + 1]},${table[i + 2]})`;
    ctx.fillRect(x, 0, 1, 10);
  }
  const labels = element('div', 'hm-colorbar-labels');
  labels.style.width = `${width}px`;
  const ends = [formatValue(domain[0]), spec.scale === 'diverging' ? '0' : '', formatValue(domain[1])];
  for (const text of ends) labels.append(element('span', '', text));
  const range = element('div', 'hm-range', `min ${formatValue(min)} · max ${formatValue(max)}`);
  bar.append(canvas, labels, range);
  return bar;
}

// Shows the hovered cell in the shared tooltip as "q 3, k 5: 0.1234".
function attachTooltip(canvas, spec, L) {
  const tooltip = tooltipElement();
  canvas.addEventListener('mousemove', (event) => {
    const box = canvas.getBoundingClientRect();
    const c = Math.floor((event.clientX - box.left - L.left) / L.cw);
    const r = Math.floor((event.clientY - box.top - L.top) / L.ch);
    if (r < 0 || c < 0 || r >= spec.rows || c >= spec.cols) {
      tooltip.hidden = true;
      return;
    }
    const v = spec.values[r * spec.cols + c];
    const shown = v === null ? spec.nullText : formatValue(v);
    tooltip.textContent =
      `${spec.rowName} ${spec.rowStart + r}, ${spec.colName} ${spec.colStart + c}: ${shown}`;
    tooltip.hidden = false;
    tooltip.style.left = `${event.clientX + 14}px`;
    tooltip.style.top = `${event.clientY + 14}px`;
  });
  canvas.addEventListener('mouseleave', hideTooltip);
}

// spec: { title, rows, cols, values (flat row-major; null = masked/non-finite),
//   scale: 'sequential' | 'diverging', domain?: [lo, hi], rowTitle, colTitle,
//   rowName ('q'), colName ('k'), rowStart (0), colStart (0): the index shown for row/col 0,
//   width/height: target plot size in px, square (true): equal cell width and height,
//   nullText: how the tooltip names a null cell }
// Returns the map's <figure>.
export function createHeatmap(input) {
  const spec = {
    scale: 'sequential', rowTitle: 'row', colTitle: 'column', rowName: 'row', colName: 'col',
    rowStart: 0, colStart: 0, nullText: 'masked', ...input,
  };
  if (spec.values.length !== spec.rows * spec.cols) {
    throw new Error(`heat map "${spec.title}": ${spec.values.length} values for ${spec.rows} × ${spec.cols}`);
  }
  const table = TABLES[spec.scale];
  const [min, max] = finiteRange(spec.values);
  const domain = colourDomain(spec, min, max);

  const figure = element('figure', 'heatmap');
  const title = element('figcaption', 'hm-title', spec.title);
  const canvas = element('canvas', 'hm-canvas');
  const probe = element('canvas').getContext('2d');
  probe.font = FONT;
  const L = layout(spec, (text) => probe.measureText(text).width);
  const ctx = hiDpiCanvas(canvas, L.width, L.height);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(paintCells(spec.values, spec.rows, spec.cols, table, domain),
    L.left, L.top, L.plotW, L.plotH);
  drawAxes(ctx, spec, L);
  attachTooltip(canvas, spec, L);

  const bar = colourBar(spec, table, domain, min, max, Math.max(120, Math.min(L.plotW, 320)));
  bar.style.marginLeft = `${L.left}px`;
  figure.append(title, canvas, bar);

  describers.set(figure, () => {
    const box = canvas.getBoundingClientRect();
    return {
      title: spec.title, rows: spec.rows, cols: spec.cols, values: spec.values, min, max,
      plot: { left: box.left + L.left, top: box.top + L.top, width: L.plotW, height: L.plotH },
      tooltip: tooltipElement(),
    };
  });
  return figure;
}

// The heat maps in the document, in document order, as the test hook reports them.
export function liveHeatmaps() {
  return [...document.querySelectorAll('figure.heatmap')].map((figure) => describers.get(figure)());
}

// One heat map per head of a [..., heads, rows, cols] tensor ({ shape, data }), all on one colour
// scale so the heads compare: a sequential map spans 0 and every value (from the lesser of 0 and
// the least value to the greater of 0 and the greatest), a diverging one is symmetric about 0.
// headTitle(h, values, rows, cols) names each; spec.width, when given, is each map's target
// size. Returns the maps' <figure>s.
export function createHeadMaps(tensor, spec, headTitle) {
  const [heads, rows, cols] = tensor.shape.slice(-3);
  const [lo, hi] = finiteRange(tensor.data);
  const low = Math.min(0, lo);
  const high = Math.max(0, hi);
  const reach = Math.max(-low, high) || 1;
  const domain = spec.scale === 'diverging' ? [-reach, reach] : [low, high > low ? high : low + 1];
  const width = spec.width ?? (heads === 1 ? 480 : heads <= 4 ? 300 : 200);
  const maps = [];
  for (let h = 0; h < heads; h++) {
    const values = tensor.data.slice(h * rows * cols, (h + 1) * rows * cols);
    maps.push(createHeatmap({ ...spec, title: headTitle(h, values, rows, cols), rows, cols, values, domain, width }));
  }
  return maps;
}
