// Container health probe: exits 0 when GET /actuator/health/liveness answers 200 on one of the
// given ports. Without arguments it tries the three plane ports from the environment (their
// defaults otherwise), so the same HEALTHCHECK works for `runtime`, `admin`, `events` and `all`.
import http from 'node:http';

const TIMEOUT_MS = 3000;
const env = process.env;
const ports = process.argv.length > 2
  ? process.argv.slice(2)
  : [env.CYCLES_RUNTIME_PORT || '7878', env.CYCLES_ADMIN_PORT || '7979', env.CYCLES_EVENTS_PORT || '7980'];

function live(port) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port: Number(port), path: '/actuator/health/liveness', timeout: TIMEOUT_MS }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

const results = await Promise.all(ports.map(live));
process.exit(results.some(Boolean) ? 0 : 1);
