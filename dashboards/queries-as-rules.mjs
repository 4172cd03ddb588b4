// Prints every query of the Grafana dashboards in this directory as a Prometheus rules file, one
// recording rule per panel query, with the dashboard variables replaced by sample values. CI runs
//   node dashboards/queries-as-rules.mjs > /tmp/q.yml && promtool check rules /tmp/q.yml
// so that a PromQL syntax error in a panel fails the build like one in alerts.yml would.
// (JSON is valid YAML, so the output is plain JSON.)
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const DIR = dirname(fileURLToPath(import.meta.url));
/** Sample values for the dashboards' variables (Grafana's built-ins included). */
const VARIABLES = {
  __rate_interval: '1m',
  __interval: '15s',
  __range: '1h',
  job: 'cycles-runtime',
  instance: '.*',
  operation: '.*',
};

function substitute(expr) {
  return expr.replace(/\$\{(\w+)(?::[^}]*)?\}|\$(\w+)/g, (whole, braced, bare) => {
    const name = braced ?? bare;
    if (!(name in VARIABLES)) throw new Error(`unknown dashboard variable ${whole} in: ${expr}`);
    return VARIABLES[name];
  });
}

const groups = [];
for (const file of readdirSync(DIR).filter((f) => f.endsWith('.json')).sort()) {
  const dashboard = JSON.parse(readFileSync(join(DIR, file), 'utf8'));
  const base = file.replace(/\.json$/, '').replace(/\W/g, '_');
  const rules = [];
  const panels = (dashboard.panels ?? []).flatMap((p) => (p.type === 'row' ? [p, ...(p.panels ?? [])] : [p]));
  for (const panel of panels) {
    for (const target of panel.targets ?? []) {
      if (!target.expr) continue;
      rules.push({
        record: `dashboard:${base}:panel_${panel.id}_${target.refId}`,
        expr: substitute(target.expr),
        labels: { panel: String(panel.title ?? '') },
      });
    }
  }
  groups.push({ name: `dashboard-${base}`, rules });
}
process.stdout.write(`${JSON.stringify({ groups }, null, 2)}\n`);
