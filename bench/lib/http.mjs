// A small JSON-over-HTTP client (keep-alive) for provisioning, pre-creation, replays and
// ledger reads. The timed runs themselves use autocannon, not this.
import http from 'node:http';

const agent = new http.Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 256 });

/**
 * One request; resolves with { status, text, json } (json undefined when the body is not JSON).
 * Rejects on a connection error or when no answer arrives within timeoutMs.
 */
export function request({ port, method, path, headers = {}, body, timeoutMs = 15_000 }) {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method,
        path,
        agent,
        headers: {
          ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}),
          ...headers,
        },
      },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json;
          try {
            json = text === '' ? undefined : JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode, text, json });
        });
        res.on('error', reject);
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${path} timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

/** Like request, but throws unless the answer is 2xx. */
export async function requestOk(opts) {
  const r = await request(opts);
  if (r.status < 200 || r.status > 299) {
    throw new Error(`${opts.method} ${opts.path} answered ${r.status}: ${r.text.slice(0, 300)}`);
  }
  return r;
}

/** Runs `fn(i)` for i in [0, n) with at most `parallel` calls in flight; returns the results. */
export async function parallelMap(n, parallel, fn) {
  const out = new Array(n);
  let next = 0;
  const worker = async () => {
    for (;;) {
      const i = next;
      next += 1;
      if (i >= n) return;
      out[i] = await fn(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, Math.max(n, 1)) }, worker));
  return out;
}

export function closeAgent() {
  agent.destroy();
}
