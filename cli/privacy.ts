/**
 * The privacy side of `pops serve` at start (consent defaults from the environment, the consent
 * mapping of Segment messages) and the `pops privacy` and `pops consent` commands.
 */
import { withTransaction } from '../common/db.js';
import { appendAuditIn } from '../domain/audit.js';
import { setConsentDefault } from '../domain/privacy/consent.js';
import { type ConsentTraitMap, consentTraitsFromEnv } from '../domain/privacy/consent-traits.js';
import { CLI_ROLES } from '../api/roles.js';
import { authenticateToken, type Role } from '../domain/privacy/tokens.js';
import { UsageError } from './output.js';
import { openDatabase, type Runtime } from './runtime.js';
import { bootstrapAdminToken } from './tokens.js';

/**
 * Applies POPS_CONSENT_DEFAULT_* (an audited change when it changes a default), creates the first
 * admin token on the first start, and returns the consent mapping of Segment identify messages and
 * the lines that show that token (null when tokens existed).
 */
export async function preparePrivacy(
  rt: Runtime,
): Promise<{ consentTraits: ConsentTraitMap; firstToken: string | null }> {
  const consentTraits = consentTraitsFromEnv(rt.config.POPS_CONSENT_TRAITS);
  const api = `http://${rt.config.POPS_HTTP_HOST}:${rt.config.POPS_HTTP_PORT}`;
  const firstToken = await bootstrapAdminToken(rt.pool, api);
  const wanted = [
    ['personalization', rt.config.POPS_CONSENT_DEFAULT_PERSONALIZATION],
    ['analytics', rt.config.POPS_CONSENT_DEFAULT_ANALYTICS],
  ] as const;
  for (const [purpose, value] of wanted) {
    if (value === undefined) continue;
    const granted = value === 'granted';
    await withTransaction(rt.pool, async (client) => {
      if (!(await setConsentDefault(client, purpose, granted, 'config'))) return;
      await appendAuditIn(client, {
        actor: 'config',
        action: 'consent.default_set',
        subject: `consent-default/${purpose}`,
        inputs: { purpose, granted },
      });
      rt.log.info({ purpose, granted }, 'consent default set from the environment');
    });
  }
  return { consentTraits, firstToken };
}

/**
 * Refuses the command unless POPS_TOKEN is a live token whose role CLI_ROLES allows for it (the
 * longest listed prefix of its words; unlisted: admin only). A guard rail, not a boundary: the CLI
 * holds the database and Temporal credentials, and whoever has those can do everything.
 */
export async function checkCliRole(words: string): Promise<void> {
  const rt = await openDatabase();
  try {
    const who = await authenticateToken(rt.pool, rt.config.POPS_TOKEN ?? '');
    if (who === null) throw new UsageError('POPS_TOKEN: the token is not known or was revoked');
    const parts = words.split(' ');
    let roles: readonly Role[] = ['admin'];
    for (let n = parts.length; n > 0; n--) {
      const listed = CLI_ROLES[parts.slice(0, n).join(' ')];
      if (listed) {
        roles = listed;
        break;
      }
    }
    if (who.role !== 'admin' && !roles.includes(who.role)) {
      throw new UsageError(
        `role ${who.role} may not run pops ${words} (needs ${roles.join(', ')})`,
      );
    }
  } finally {
    await rt.close();
  }
}
