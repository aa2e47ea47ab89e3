/**
 * The mail settings campaign code reads from the environment (common/config.ts): the SMTP server
 * (POPS_SMTP_URL, else the local catcher `pops serve` starts on POPS_SMTP_CAPTURE_PORT), pool
 * size and rate, and the unsubscribe secret and public base URL.
 */
import { loadConfig } from '../../common/config.js';
import { unsubscribeSecret } from '../privacy/keys.js';

/** The settings of the current environment. */
export function mailSettings() {
  const config = loadConfig();
  const url = config.POPS_SMTP_URL ?? `smtp://127.0.0.1:${config.POPS_SMTP_CAPTURE_PORT}`;
  return {
    smtp: {
      url,
      maxConnections: config.POPS_SMTP_MAX_CONNECTIONS,
      ratePerSecond: config.POPS_SMTP_RATE,
    },
    unsubscribe: {
      secret: unsubscribeSecret(),
      baseUrl: config.POPS_PUBLIC_URL ?? `http://${config.POPS_HTTP_HOST}:${config.POPS_HTTP_PORT}`,
    },
  };
}
