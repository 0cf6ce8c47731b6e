// The console's calls to the server: the console API (/console/api/*) and KServe v2 inference
// (/v2/models/{model}/infer), both with the bearer token when one was given. A 401 raises
// AuthRequired so the page can ask for a token; any other error answer raises an Error with the
// server's own message ({"error": "..."}).

const TOKEN_KEY = 'attnserve.token';

export class AuthRequired extends Error {}

// What the test hooks report: the last inference request sent and the last models answer.
export const record = { lastInference: null, models: null };

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) ?? '';
}

// Keeps the token for this tab; an empty one forgets it. Throws, keeping the old one, when the
// token is not printable ASCII: fetch() refuses a header with characters outside ISO-8859-1, and
// the rest of Latin-1 would go out as single bytes that never match the token file's UTF-8.
export function setToken(value) {
  const unsendable = [...value].find((c) => c < ' ' || c > '~');
  if (unsendable !== undefined) {
    const code = unsendable.codePointAt(0).toString(16).toUpperCase().padStart(4, '0');
    throw new Error(`A bearer token is printable ASCII; this one holds U+${code}.`);
  }
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headers(extra = {}) {
  const all = { Accept: 'application/json', ...extra };
  if (token()) all.Authorization = `Bearer ${token()}`;
  return all;
}

// The answer's JSON, or the error it carries. Error bodies are {"error": "..."}; a body that is
// not JSON (a proxy's page) is summarised by its status line.
async function readAnswer(response) {
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    if (response.ok) throw new Error(`${response.url}: the answer is not JSON`);
  }
  if (response.ok) return body;
  const message = body?.error ?? `${response.status} ${response.statusText}`;
  if (response.status === 401) {
    throw new AuthRequired(token() ? `the token was refused: ${message}` : message);
  }
  throw new Error(message);
}

async function send(url, init) {
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    throw new Error(`cannot reach the server (${error.message})`);
  }
  return readAnswer(response);
}

function getJson(path, signal) {
  return send(path, { headers: headers(), signal });
}

export async function fetchModels(signal) {
  const answer = await getJson('/console/api/models', signal);
  record.models = answer;
  return answer;
}

export function fetchMetrics(signal) {
  return getJson('/console/api/metrics', signal);
}

// The outputs of a v2 answer by name; output(name) is { shape, data } with data a flat row-major
// array exactly as the server wrote it, and fails naming what the answer holds when `name` is
// missing or malformed (a page would otherwise stop on a TypeError deep in its drawing).
function answerOutputs(url, answer) {
  const byName = new Map((answer?.outputs ?? []).map((output) => [output?.name, output]));
  return {
    output(name) {
      const found = byName.get(name);
      if (!found) {
        const held = [...byName.keys()].map((key) => `"${key}"`).join(', ') || 'none';
        throw new Error(`${url}: the answer has no output "${name}" (outputs: ${held})`);
      }
      if (!Array.isArray(found.shape) || !Array.isArray(found.data)) {
        throw new Error(`${url}: the answer's output "${name}" lacks its shape or data`);
      }
      return { shape: found.shape, data: found.data.flat(Infinity) };
    },
  };
}

// POST /v2/models/{model}/infer with a JSON body; returns the answer's outputs (answerOutputs).
export async function infer(model, body, signal) {
  const url = `/v2/models/${encodeURIComponent(model)}/infer`;
  record.lastInference = { url, body };
  const answer = await send(url, {
    method: 'POST',
    headers: headers({ 'Content-Type': 'application/json' }),
    body: JSON.stringify(body),
    signal,
  });
  return answerOutputs(url, answer);
}
