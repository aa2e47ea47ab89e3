/**
 * The privacy side of `pops serve` at start (consent defaults from the environment, the consent
 * mapping of Segment messages) and the `pops privacy` and `pops consent` commands.
 */
import { withTransaction } from '../common/db.js';
import { appendAuditIn } from '../domain/audit.js';
import { setConsentDefault } from '../domain/privacy/consent.js';
import { type ConsentTraitMap, consentTraitsFromEnv } from '../domain/privacy/consent-traits.js';
import type { Runtime } from './runtime.js';

/**
 * Applies POPS_CONSENT_DEFAULT_* (an audited change when it changes a default) and returns the
 * consent mapping of Segment identify messages.
 */
export async function preparePrivacy(rt: Runtime): Promise<{ consentTraits: ConsentTraitMap }> {
  const consentTraits = consentTraitsFromEnv(rt.config.POPS_CONSENT_TRAITS);
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
  return { consentTraits };
}
