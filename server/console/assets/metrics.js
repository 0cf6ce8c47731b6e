// Live figures from two successive /console/api/metrics snapshots, computed the way Prometheus
// computes them from a range: counter increases (a decrease means the server restarted, and the
// new value is the increase), histogram bucket increases, and histogram_quantile's linear
// interpolation inside the bucket that holds the rank.

function samples(snapshot, name) {
  return snapshot?.families?.find((family) => family.name === name)?.samples ?? [];
}

function seriesKey(labels) {
  return JSON.stringify(Object.entries(labels ?? {}).sort());
}

// A counter's increase between two readings; a reset starts again from zero.
function increase(before, after) {
  return after >= before ? after - before : after;
}

function bucketCounts(sample) {
  return new Map((sample?.buckets ?? []).map((b) => [b.le ?? Infinity, b.count]));
}

// Whether a histogram series started again between two readings (the server restarted): any of
// its counters went down — the count, the sum (the console's histograms observe durations,
// never negative) or a bucket.
function histogramReset(old, now) {
  if (now.count < old.count || now.sum < old.sum) return true;
  const oldBuckets = bucketCounts(old);
  return (now.buckets ?? []).some((b) => b.count < (oldBuckets.get(b.le ?? Infinity) ?? 0));
}

// Pairs each series of `after` matching `keep(labels)` with the same series in `before`
// (a series that did not exist yet counts from zero, as it was created at its first use).
function pairedSeries(before, after, name, keep) {
  const earlier = new Map(samples(before, name).map((s) => [seriesKey(s.labels), s]));
  return samples(after, name)
    .filter((s) => keep(s.labels ?? {}))
    .map((s) => [earlier.get(seriesKey(s.labels)), s]);
}

function counterIncrease(before, after, name, keep) {
  let total = 0;
  for (const [old, now] of pairedSeries(before, after, name, keep)) {
    total += increase(old?.value ?? 0, now.value);
  }
  return total;
}

// The increase of a histogram over the window, its series summed: { count, sum, buckets: [{ le
// (Infinity for +Inf), count }] } with buckets cumulative and sorted by le.
function histogramIncrease(before, after, name, keep) {
  const byLe = new Map();
  let count = 0;
  let sum = 0;
  for (const [old, now] of pairedSeries(before, after, name, keep)) {
    const base = old !== undefined && histogramReset(old, now) ? undefined : old;
    count += now.count - (base?.count ?? 0);
    sum += now.sum - (base?.sum ?? 0);
    const oldBuckets = bucketCounts(base);
    for (const bucket of now.buckets ?? []) {
      const le = bucket.le ?? Infinity;
      byLe.set(le, (byLe.get(le) ?? 0) + bucket.count - (oldBuckets.get(le) ?? 0));
    }
  }
  const buckets = [...byLe].map(([le, n]) => ({ le, count: n })).sort((a, b) => a.le - b.le);
  return { count, sum, buckets };
}

// Prometheus histogram_quantile: the q-quantile of cumulative buckets, interpolating linearly
// within the bucket where the rank falls (the first bucket from 0); a rank in the +Inf bucket
// gives the highest finite bound. null when the histogram is empty.
function histogramQuantile(q, buckets) {
  const total = buckets.at(-1)?.count ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  for (let i = 0; i < buckets.length; i++) {
    const { le, count } = buckets[i];
    if (count < rank) continue;
    if (le === Infinity) return i > 0 ? buckets[i - 1].le : null;
    if (i === 0 && le <= 0) return le;
    const lower = i === 0 ? 0 : buckets[i - 1].le;
    const below = i === 0 ? 0 : buckets[i - 1].count;
    return lower + ((le - lower) * (rank - below)) / (count - below);
  }
  return null;
}

// Seconds between two snapshots on the server's steady clock (monotonic_seconds), which a change
// of the wall clock cannot bend; servers that do not send it are timed by time_seconds.
function elapsedSeconds(before, after) {
  const clock = 'monotonic_seconds' in before && 'monotonic_seconds' in after ? 'monotonic_seconds' : 'time_seconds';
  return after[clock] - before[clock];
}

// Per-model figures over the window between two snapshots: requests/s, errors/s (code other
// than OK), p50/p99 request latency (s) and mean queue wait (s); all null for the first snapshot
// (no window yet) and when the window is not positive, each null where not computable.
export function modelFigures(before, after, model) {
  const dt = before ? elapsedSeconds(before, after) : NaN;
  if (!(dt > 0)) return { rate: null, errors: null, p50: null, p99: null, queueWait: null };
  const ofModel = (labels) => labels.model === model;
  const requests = counterIncrease(before, after, 'attnserve_requests_total', ofModel);
  const failures = counterIncrease(before, after, 'attnserve_requests_total',
    (labels) => ofModel(labels) && labels.code !== 'OK');
  const latency = histogramIncrease(before, after, 'attnserve_request_seconds', ofModel);
  const queue = histogramIncrease(before, after, 'attnserve_queue_wait_seconds', ofModel);
  return {
    rate: requests / dt,
    errors: failures / dt,
    p50: histogramQuantile(0.5, latency.buckets),
    p99: histogramQuantile(0.99, latency.buckets),
    queueWait: queue.count > 0 ? queue.sum / queue.count : null,
  };
}

// A gauge's current value, its series summed; null when the server does not export it.
export function gauge(snapshot, name) {
  const found = samples(snapshot, name);
  return found.length ? found.reduce((total, s) => total + s.value, 0) : null;
}
