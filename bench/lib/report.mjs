// Plain-text tables for stdout.

const fmtNum = (v, digits = 0) =>
  v === null || v === undefined || Number.isNaN(v) ? '-' : Number(v).toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
const fmtMs = (v) => (v === null || v === undefined ? '-' : v < 10 ? v.toFixed(2) : v.toFixed(1));

export function table(headers, rows, align) {
  const widths = headers.map((h, i) => Math.max(String(h).length, ...rows.map((r) => String(r[i]).length)));
  const cell = (v, i) => {
    const s = String(v);
    return (align?.[i] ?? 'r') === 'l' ? s.padEnd(widths[i]) : s.padStart(widths[i]);
  };
  const line = (cells) => `| ${cells.map(cell).join(' | ')} |`;
  const sep = `|${widths.map((w, i) => ((align?.[i] ?? 'r') === 'l' ? `:${'-'.repeat(w + 1)}` : `${'-'.repeat(w + 1)}:`)).join('|')}|`;
  return [line(headers), sep, ...rows.map(line)].join('\n');
}

const pctCell = (v) => (v === null || v === undefined ? '-' : String(Math.round(v)));
const cpuCell = (c) => (c ? `${pctCell(c.server_pct)}/${pctCell(c.redis_pct)}/${pctCell(c.bench_pct)}` : '-');

export function runsTable(runs, ratioByConn) {
  const rows = runs.map((r) => {
    const ratio = r.scenario === 'reserve' ? ratioByConn.get(r.connections) : undefined;
    const notes = [];
    if (r.iterations_per_s !== undefined) notes.push(`${fmtNum(r.iterations_per_s)} iter/s`);
    if (ratio !== undefined) notes.push(`${(ratio * 100).toFixed(0)}% of Redis-bound`);
    if (r.unanswered_settled.replayed > 0) notes.push(`${r.unanswered_settled.replayed} in-flight settled`);
    if (r.unanswered_settled.failed > 0) notes.push(`${r.unanswered_settled.failed} NOT settled`);
    if (r.success_count !== r.autocannon_2xx) notes.push(`2xx count ${r.success_count} != autocannon ${r.autocannon_2xx}`);
    if (r.pool?.exhausted) notes.push('POOL EXHAUSTED (run cut short)');
    return [
      r.scenario,
      r.connections,
      fmtNum(r.throughput_rps),
      fmtMs(r.latency_ms.p50),
      fmtMs(r.latency_ms.p99),
      r.errors,
      `${r.ledger.mismatches} ${r.ledger.mismatches === 0 ? '✓' : '✗'}`,
      cpuCell(r.cpu),
      notes.join('; '),
    ];
  });
  return table(
    ['scenario', 'conns', 'req/s', 'p50 ms', 'p99 ms', 'errors', 'ledger mism.', 'CPU% srv/redis/bench', 'notes'],
    rows,
    ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l'],
  );
}

export function redisTable(direct, serverReserve) {
  const rows = direct.map((d) => {
    const s = serverReserve.get(d.connections);
    return [
      d.connections,
      fmtNum(d.throughput_ops),
      fmtMs(d.latency_ms.p50),
      fmtMs(d.latency_ms.p99),
      d.errors,
      `${d.ledger.mismatches} ${d.ledger.mismatches === 0 ? '✓' : '✗'}`,
      cpuCell(d.cpu),
      d.cpu?.redis_evalsha_usec_per_call ?? '-',
      s ? fmtNum(s.throughput_rps) : '-',
      s ? `${((s.throughput_rps / d.throughput_ops) * 100).toFixed(1)}%` : '-',
    ];
  });
  return table(['conns', 'direct ops/s', 'p50 ms', 'p99 ms', 'errors', 'ledger mism.', 'CPU% srv/redis/bench', 'µs in Redis/call', 'server reserve req/s', 'server / Redis-bound'], rows);
}

export function targetsTable(targets) {
  return table(
    ['target', 'measured', 'met'],
    targets.map((t) => [t.name, t.measured, t.met === undefined ? 'n/a' : t.met ? '✓' : '✗']),
    ['l', 'r', 'l'],
  );
}

export { fmtNum, fmtMs };
