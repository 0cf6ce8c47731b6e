// The console's calls to the server: the console API (/console/api/*) and KServe v2 inference
// (/v2/models/{model}/infer), both with the bearer token when one was given. A 401 raises
// AuthRequired so the page can ask for a token; any other error answer raises ApiError with the
// server's own message ({"error": "..."}).

const TOKEN_KEY = 'attnserve.token';

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export class AuthRequired extends ApiError {}

// What the test hooks report: the last inference request sent and the last models answer.
export const record = { lastInference: null, models: null };

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) ?? '';
}

export function setToken(value) {
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
    if (response.ok) throw new ApiError(response.status, `${response.url}: the answer is not JSON`);
  }
  if (response.ok) return body;
  const message = body?.error ?? `${response.status} ${response.statusText}`;
  if (response.status === 401) {
    throw new AuthRequired(401, token() ? `the token was refused: ${message}` : message);
  }
  throw new ApiError(response.status, message);
}

async function send(url, init) {
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    throw new ApiError(0, `cannot reach the server (${error.message})`);
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

// POST /v2/models/{model}/infer with a JSON body; returns the answer's outputs by name as
// { shape, data } with data a flat row-major array exactly as the server wrote it.
export async function infer(model, body, signal) {
  const url = `/v2/models/${encodeURIComponent(model)}/infer`;
  record.lastInference = { url, body };
  const answer = await send(url, {
    method: 'POST',
    headers: headers({ 'Content-Type': 'application/json' }),
    body: JSON.stringify(body),
    signal,
  });
  const outputs = {};
  for (const output of answer.outputs ?? []) {
    outputs[output.name] = { shape: output.shape, data: output.data.flat(Infinity) };
  }
  return outputs;
}
