import { pino, type Logger } from 'pino';

/** pino JSON lines; API keys and admin keys are redacted wherever they appear in a log object. */
export function createLogger(level: string, name = 'cycles'): Logger {
  return pino({
    name,
    level,
    redact: {
      paths: [
        'req.headers["x-cycles-api-key"]',
        'req.headers["x-admin-api-key"]',
        'headers["x-cycles-api-key"]',
        'headers["x-admin-api-key"]',
        'key_secret',
        '*.key_secret',
        'adminApiKey',
        'redisUrl',
      ],
      censor: '[redacted]',
    },
  });
}
