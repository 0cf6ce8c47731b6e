// attnserve web console: hash routing, the header, loading/error state and the test hooks.
//
// Test hooks (a browser test relies on these; keep them stable):
//   document.body.dataset.page   "models" | "encodings" | "attention": the page shown.
//   document.body.dataset.state  "loading" while the page fetches, "ready" once it has rendered
//                                its data, "error" when that failed (the message is shown in
//                                #page-error). The models page refreshes in the background
//                                without going back to "loading".
//   window.attnserveConsole = {
//     heatmaps()     → [{ title, rows, cols, values (flat row-major, exactly the numbers drawn:
//                       the service's numbers, null where it wrote a non-finite one), min, max
//                       (finite range), plot: { left, top, width, height } (the cells' rectangle
//                       in viewport CSS pixels), tooltip (the #heatmap-tooltip element) }], in
//                       document order;
//     lastInference  { url, body }: the last inference request sent, body the JSON object;
//     models         the last /console/api/models answer;
//   }
//   #heatmap-tooltip shows "ROW_NAME r, COL_NAME c: value" (4 significant digits, e.g.
//   "q 3, k 5: 0.1234") while the mouse moves over a cell of a heat map's canvas.
//   Models page: each model row is <tr data-model="NAME">, its state cell <td data-state="loaded|
//   stale|failed">, its live figures <td data-field="rate|errors|p50|p99|queue_wait"
//   data-value="number, absent when no figure">; the server tiles <div data-field="…">.
//
// URLs: #/models?refresh=2, #/encodings?family=…, #/attention?model=…; see each page module.

import { AuthRequired, fetchModels, record, setToken, token } from './api.js';
import { hideTooltip, liveHeatmaps } from './heatmap.js';
import * as modelsPage from './models.js';
import * as encodingsPage from './encodings.js';
import * as attentionPage from './attention.js';

// A Map, so that a hash naming an Object.prototype member (#/constructor) is an unknown page.
const PAGES = new Map([['models', modelsPage], ['encodings', encodingsPage], ['attention', attentionPage]]);
const DEFAULT_PAGE = 'models';

window.attnserveConsole = {
  heatmaps: liveHeatmaps,
  get lastInference() {
    return record.lastInference;
  },
  get models() {
    return record.models;
  },
};

let current = null;  // { name, page, loadController }

function parseHash() {
  const hash = location.hash.replace(/^#\/?/, '');
  const split = hash.indexOf('?');
  const name = split < 0 ? hash : hash.slice(0, split);
  const params = new URLSearchParams(split < 0 ? '' : hash.slice(split + 1));
  return { name, params };
}

function setState(state) {
  document.body.dataset.state = state;
}

function showError(message) {
  const box = document.getElementById('page-error');
  box.textContent = message;
  box.hidden = !message;
}

function showTokenForm() {
  const form = document.getElementById('token-form');
  form.hidden = false;
  form.querySelector('.token-message').textContent = token()
    ? 'The server refused this token; enter another.'
    : 'This server needs a bearer token for its data (kept for this tab only).';
  form.elements.token.value = token();
  form.elements.token.focus();
}

// The forget control shows while the tab holds a token.
function updateTokenControls() {
  document.getElementById('forget-token').hidden = !token();
}

function updateHeader(answer) {
  const server = answer?.server ?? {};
  const version = document.getElementById('server-version');
  version.textContent = server.version ? `server ${server.version}` : '';
  document.getElementById('server-draining').hidden = !server.draining;
}

function updateNav(name) {
  for (const link of document.querySelectorAll('nav a[data-page]')) {
    link.classList.toggle('active', link.dataset.page === name);
    if (link.dataset.page === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

// The context a page works through: where to draw, how to change its hash, the models list, and
// load(), which runs one fetch-and-render task with the state hooks and error display handled here.
function pageContext(name, root) {
  let knownModels = null;     // the models list as last fetched for this page
  let modelsRefresh = null;   // a background fetch of it in flight
  const context = {
    root,
    // Writes the page's settings into the hash. replace: rewrite the current entry without a
    // hashchange (used to make the URL canonical); otherwise the hashchange updates the page.
    navigate(params, { replace = false } = {}) {
      const query = new URLSearchParams(params).toString();
      const hash = `#/${name}${query ? `?${query}` : ''}`;
      if (hash === location.hash) return;
      if (replace) history.replaceState(null, '', hash);
      else location.hash = hash;
    },
    // Sets settings ({ key: text }) in the hash as it is now, not as the page last read it, so
    // that changes made in quick succession all stick.
    changeSettings(changes) {
      const { params } = parseHash();
      for (const [key, value] of Object.entries(changes)) params.set(key, value);
      context.navigate(params);
    },
    // The models list, fresh from the server; also refreshes the header.
    async models(signal) {
      const answer = await fetchModels(signal);
      updateHeader(answer);
      knownModels = answer?.models ?? [];
      return knownModels;
    },
    // The models list as last fetched, at once (null before the first fetch), so that a
    // settings change redraws its form without waiting for the server; a fresh list is fetched
    // in the background for the next call. A failure there is left for the page's own requests
    // to meet and show.
    cachedModels() {
      if (knownModels !== null) {
        modelsRefresh ??= context.models().catch(() => {}).finally(() => { modelsRefresh = null; });
      }
      return knownModels;
    },
    // Runs task(signal): a newer load aborts the older one. quiet: do not show "loading" (a
    // background refresh). Resolves to "ready", "error", "auth" (a token is needed; retrying
    // without one would only be refused again) or "aborted" (superseded, or the page left).
    async load(task, { quiet = false } = {}) {
      current.loadController?.abort();
      const controller = new AbortController();
      current.loadController = controller;
      if (!quiet) setState('loading');
      try {
        await task(controller.signal);
        if (controller.signal.aborted) return 'aborted';
        showError('');
        setState('ready');
        return 'ready';
      } catch (error) {
        if (controller.signal.aborted) return 'aborted';
        showError(error.message);
        setState('error');
        if (!(error instanceof AuthRequired)) return 'error';
        showTokenForm();
        return 'auth';
      }
    },
  };
  return context;
}

function route() {
  const { name, params } = parseHash();
  // The maps under the mouse are about to be redrawn or removed.
  hideTooltip();
  if (!PAGES.has(name)) {
    history.replaceState(null, '', `#/${DEFAULT_PAGE}`);
    route();
    return;
  }
  if (current?.name === name) {
    current.page.update(params);
    return;
  }
  if (current) {
    current.loadController?.abort();
    current.page.dispose();
  }
  const root = document.getElementById('page');
  root.replaceChildren();
  showError('');
  document.body.dataset.page = name;
  updateNav(name);
  current = { name, page: null, loadController: null };
  current.page = PAGES.get(name).create(pageContext(name, root));
  current.page.update(params);
}

// Reopens the current page from scratch, with the token as it now is.
function reopenPage() {
  updateTokenControls();
  if (current) {
    current.loadController?.abort();
    current.page.dispose();
    current = null;
  }
  route();
}

// Saving a token, or forgetting it (sessionStorage keeps it until the tab closes otherwise),
// reopens the page; a token that cannot be sent is refused at once, with why.
function setupTokenControls() {
  const form = document.getElementById('token-form');
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    try {
      setToken(form.elements.token.value.trim());
    } catch (error) {
      form.querySelector('.token-message').textContent = error.message;
      return;
    }
    form.hidden = true;
    reopenPage();
  });
  document.getElementById('forget-token').addEventListener('click', () => {
    setToken('');
    reopenPage();
  });
  updateTokenControls();
}

setupTokenControls();
window.addEventListener('hashchange', route);
route();
