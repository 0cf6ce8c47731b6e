// A seeded pseudo-random generator for the console's random inputs, so that a seed in the URL
// always produces the same token embeddings (and a linked case shows the same maps).
// Uniforms come from a Weyl sequence (a 32-bit counter stepped by the golden-ratio constant
// 0x9e3779b9) passed through MurmurHash3's 32-bit finaliser fmix32; standard normals from the
// Box–Muller transform, both outputs of each pair used in turn.

export function createRng(seed) {
  let counter = (Math.trunc(seed) ^ 0x5bd1e995) >>> 0;
  let spare = null;

  // Uniform in [0, 1).
  function uniform() {
    counter = (counter + 0x9e3779b9) >>> 0;
    let z = counter;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    z ^= z >>> 16;
    return (z >>> 0) / 4294967296;
  }

  function normal() {
    if (spare !== null) {
      const value = spare;
      spare = null;
      return value;
    }
    const radius = Math.sqrt(-2 * Math.log(1 - uniform()));  // 1 − u ∈ (0, 1]: log is finite
    const angle = 2 * Math.PI * uniform();
    spare = radius * Math.sin(angle);
    return radius * Math.cos(angle);
  }

  // `count` standard normals rounded to 4 decimals: the request JSON stays short, and the
  // numbers sent are exactly the numbers shown in lastInference.
  function normals(count) {
    const out = new Array(count);
    for (let i = 0; i < count; i++) out[i] = Math.round(normal() * 1e4) / 1e4;
    return out;
  }

  return { normals };
}
