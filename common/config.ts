/**
 * The one place pops reads its environment. Every variable is parsed by zod at start; a wrong value
 * fails with the variable's name and the value it had, before anything connects or writes.
 */
import { InputError } from './failures.js';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';

const port = z.coerce.number().int().min(1).max(65535);
const optionalText = z
  .string()
  .trim()
  .transform((v) => (v === '' ? undefined : v))
  .optional();

/** How often a schedule fires: a whole number of seconds, minutes, hours or days (30s, 1m, 1h). */
export const intervalSchema = z
  .string()
  .trim()
  .toLowerCase()
  .regex(/^[1-9][0-9]{0,5}[smhd]$/, 'must be a whole number of s, m, h or d, e.g. 30s, 1m, 1h');

export const envSchema = z.object({
  DATABASE_URL: optionalText.pipe(
    z
      .string()
      .regex(/^postgres(ql)?:\/\//, 'must start with postgres:// or postgresql://')
      .optional(),
  ),
  TEMPORAL_ADDRESS: optionalText.pipe(
    z
      .string()
      .regex(/^[^\s:/]+:\d{1,5}$/, 'must be host:port, e.g. localhost:7233')
      .optional(),
  ),
  TEMPORAL_NAMESPACE: z.string().trim().min(1).default('default'),
  TEMPORAL_TLS_CERT: optionalText,
  TEMPORAL_TLS_KEY: optionalText,
  TEMPORAL_TLS_CA: optionalText,
  TEMPORAL_API_KEY: optionalText,
  POPS_STATE_DIR: z.string().trim().min(1).default('.pops'),
  POPS_CACHE_DIR: z
    .string()
    .trim()
    .min(1)
    .default(path.join(os.homedir(), '.cache', 'pops')),
  POPS_TEMPORAL_CLI: optionalText,
  POPS_PG_PORT: port.default(54329),
  POPS_TEMPORAL_PORT: port.default(7233),
  POPS_TEMPORAL_UI_PORT: port.default(8233),
  POPS_HTTP_HOST: z.string().trim().min(1).default('127.0.0.1'),
  POPS_HTTP_PORT: port.default(8080),
  POPS_TASK_QUEUE_PREFIX: z
    .string()
    .regex(/^[a-z0-9][a-z0-9-]*$/, 'lowercase letters, digits and dashes')
    .default('pops'),
  POPS_TRAIN_BACKEND: z.enum(['auto', 'tensorflow', 'wasm', 'cpu']).default('auto'),
  POPS_ACTOR: z
    .string()
    .trim()
    .min(1)
    .default(os.userInfo().username || 'unknown'),
  // How often `pops serve` has the identity-merge schedule run: unset creates it every 1m if it is
  // missing and leaves an existing one as `pops identity schedule` set it; a value is applied at
  // each start; `off` creates none.
  /** A YAML file of identity rules (config/identity-rules.example.yaml); unset: the defaults. */
  POPS_IDENTITY_RULES: optionalText,
  POPS_IDENTITY_MERGE_EVERY: optionalText.pipe(
    z
      .string()
      .toLowerCase()
      .regex(
        /^(off|[1-9][0-9]{0,5}[smhd])$/,
        'must be off, or a whole number of s, m, h or d, e.g. 1m',
      )
      .optional(),
  ),
  // How often `pops serve` has the incremental materialization of every registered feature run
  // (15m when unset); `off` creates no schedule.
  POPS_FEATURES_MATERIALIZE_EVERY: optionalText.pipe(
    z
      .string()
      .toLowerCase()
      .regex(
        /^(off|[1-9][0-9]{0,5}[smhd])$/,
        'must be off, or a whole number of s, m, h or d, e.g. 15m',
      )
      .optional(),
  ),
  // Consent (docs/privacy.md): where Segment identify messages carry it (JSON: purpose → paths),
  // and
  // the defaults `pops serve` applies at start where a person has none (marketing is always
  // opt-in).
  POPS_CONSENT_TRAITS: optionalText,
  // The API token commands that call a served API send (pops simulate traffic --api), and that
  // names the caller's role for the CLI's role table (api/roles.ts CLI_ROLES).
  POPS_TOKEN: optionalText,
  // Retention (docs/privacy.md): `table=<days>d,…`, enforced by a schedule every
  // POPS_RETENTION_EVERY (1d) that `pops serve` keeps; unset: no retention.
  POPS_RETENTION: optionalText,
  POPS_RETENTION_EVERY: intervalSchema.default('1d'),
  POPS_CONSENT_DEFAULT_PERSONALIZATION: z.enum(['granted', 'denied']).optional(),
  POPS_CONSENT_DEFAULT_ANALYTICS: z.enum(['granted', 'denied']).optional(),
  // Campaign mail (issue 8). Unset POPS_SMTP_URL: `pops serve` starts a local capture server that
  // writes each message as an .eml file under <state dir>/mail and sends through it.
  POPS_SMTP_URL: optionalText.pipe(
    z
      .string()
      .regex(/^smtps?:\/\/[^\s]+$/, 'must be smtp://host:port or smtps://user:pass@host:port')
      .optional(),
  ),
  POPS_SMTP_MAX_CONNECTIONS: z.coerce.number().int().min(1).max(100).default(5),
  /** Messages per second across the pool; 0 is no limit. */
  POPS_SMTP_RATE: z.coerce.number().int().min(0).max(100_000).default(200),
  POPS_SMTP_CAPTURE_PORT: port.default(2525),
  /**
   * Signs unsubscribe tokens; unset: a random secret kept in <state dir>/keys/unsubscribe.key
   * (domain/privacy/keys.ts unsubscribeSecret).
   */
  POPS_UNSUBSCRIBE_SECRET: optionalText.pipe(
    z
      .string()
      .min(16)
      // The default of earlier versions is public: tokens signed with it can be forged by anyone.
      .refine((v) => v !== 'pops-local-unsubscribe-secret', 'is the public default of old versions')
      .optional(),
  ),
  /** The From address of notices (sendNotice). */
  POPS_NOTICE_SENDER: z.email().default('notices@pops.local'),
  /** Where recipients reach the API (the base of unsubscribe links). */
  POPS_PUBLIC_URL: z.url().optional(),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export type Config = z.infer<typeof envSchema>;

/** Thrown by loadConfig when a variable has a wrong value; the message names each bad variable. */
export class ConfigError extends InputError {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
  }
}

/** Parses the environment into a Config, or throws ConfigError naming every wrong variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const result = envSchema.safeParse(env);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => {
    const name = String(issue.path[0] ?? '?');
    return `${name}=${JSON.stringify(env[name] ?? '')}: ${issue.message}`;
  });
  throw new ConfigError(problems);
}

/** The folder under which embedded services keep their data; relative paths resolve from cwd. */
export function stateDir(config: Config): string {
  return path.resolve(config.POPS_STATE_DIR);
}
