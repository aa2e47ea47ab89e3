/**
 * What one person would get from a campaign now, or why nothing: the same gates as the send path
 * (audience, consent, suppression, address, holdout, local send time, quiet hours, cap), read
 * without writing anything, then the message rendered as it would be sent.
 */
import { randomUUID } from 'node:crypto';
import type { Pool } from '../../common/db.js';
import { consentedPersons } from '../privacy/consent.js';
import { emailAddresses } from '../privacy/contacts.js';
import type { Decider } from '../decide/decider.js';
import { selectAudience, timeZones } from './audience.js';
import { renderCampaign } from './content.js';
import type { Campaign } from './definition.js';
import { holdoutDraw, isHeldOut, nextLocalTime, quietUntil } from './gates.js';
import { capAllows, suppressedPersons } from './ledger.js';
import type { Mailer, SendOutcome } from './mailer.js';
import { signUnsubscribe, unsubscribeUrl } from './unsubscribe.js';

export interface Preview {
  campaign: string;
  personKey: string;
  at: string;
  /** True when a message would go out now. */
  wouldSend: boolean;
  /** Why nothing would go out (or when it would): gates in the send path's order. */
  reasons: string[];
  timeZone: string;
  zoneSource: string;
  holdout: { draw: number; percent: number; heldOut: boolean };
  features: Record<string, unknown>;
  message?: { to: string; from: string; subject: string; text: string; html: string };
}

/** Previews `personKey` under `campaign` at `at`. */
export async function previewPerson(
  pool: Pool,
  options: { decider?: Decider | undefined; unsubscribe: { secret: string; baseUrl: string } },
  campaign: Campaign,
  personKey: string,
  at: Date,
): Promise<Preview> {
  const reasons: string[] = [];
  const [admitted] = await selectAudience(pool, campaign, at, [personKey]);
  if (!admitted) reasons.push('not_in_audience: the audience conditions do not hold');
  const [consented, suppressed, addresses, zones] = await Promise.all([
    consentedPersons(pool, [personKey], campaign.audience.purpose, at),
    suppressedPersons(pool, [personKey]),
    emailAddresses(pool, [personKey]),
    timeZones(pool, [personKey], campaign.defaultTimeZone),
  ]);
  if (!consented.has(personKey)) {
    reasons.push(`no_consent: no ${campaign.audience.purpose} consent`);
  }
  if (suppressed.has(personKey)) reasons.push('suppressed: under an unlifted suppression');
  const address = addresses.get(personKey);
  if (!address) reasons.push('no_address: contacts hold no address');
  const zone = zones.get(personKey) ?? { zone: campaign.defaultTimeZone, source: 'default' };
  const salt = campaign.holdout.salt ?? campaign.name;
  const heldOut = isHeldOut(salt, personKey, campaign.holdout.percent);
  if (heldOut) reasons.push(`holdout: in the ${campaign.holdout.percent}% held out`);
  if ('localTime' in campaign.schedule) {
    const next = nextLocalTime(campaign.schedule.localTime, zone.zone, at);
    if (next.getTime() > at.getTime()) {
      reasons.push(`local_time: would wait until ${next.toISOString()} (${zone.zone})`);
    }
  }
  if (campaign.quietHours) {
    const until = quietUntil(campaign.quietHours, zone.zone, at);
    if (until) {
      reasons.push(
        campaign.quietHours.behaviour === 'skip'
          ? `quiet_hours: skipped (quiet in ${zone.zone} until ${until.toISOString()})`
          : `quiet_hours: held until ${until.toISOString()} (${zone.zone})`,
      );
    }
  }
  if (campaign.frequencyCap && !(await capAllows(pool, { personKey, at }, campaign.frequencyCap))) {
    const cap = campaign.frequencyCap;
    reasons.push(`capped: ${cap.max} marketing emails in the last ${cap.days} days already`);
  }
  const preview: Preview = {
    campaign: campaign.name,
    personKey,
    at: at.toISOString(),
    wouldSend: reasons.length === 0,
    reasons,
    timeZone: zone.zone,
    zoneSource: zone.source,
    holdout: { draw: holdoutDraw(salt, personKey), percent: campaign.holdout.percent, heldOut },
    features: admitted?.features ?? {},
  };
  if (address) {
    const token = signUnsubscribe(options.unsubscribe.secret, {
      personKey,
      purpose: campaign.audience.purpose,
      campaign: campaign.name,
    });
    const rendered = await renderCampaign(
      pool,
      options.decider,
      campaign,
      at,
      { personKey, holdout: heldOut, timeZone: zone.zone, features: preview.features },
      unsubscribeUrl(options.unsubscribe.baseUrl, token),
    );
    preview.message = {
      to: address,
      from: campaign.sender,
      subject: rendered.subject,
      text: rendered.text,
      html: rendered.html,
    };
  }
  return preview;
}

/**
 * Sends the campaign's message, rendered for `personKey` (or a sample person with no features),
 * to `address`, subject marked `[test]`. Recorded nowhere: it is not a send of any run.
 */
export async function testSend(
  pool: Pool,
  options: {
    decider?: Decider | undefined;
    unsubscribe: { secret: string; baseUrl: string };
    mailer: Mailer;
  },
  campaign: Campaign,
  address: string,
  personKey = 'unresolved:test-send-sample',
): Promise<{ to: string; subject: string; outcome: SendOutcome }> {
  const [zone] = (await timeZones(pool, [personKey], campaign.defaultTimeZone)).values();
  const token = signUnsubscribe(options.unsubscribe.secret, {
    personKey,
    purpose: campaign.audience.purpose,
    campaign: campaign.name,
  });
  const link = unsubscribeUrl(options.unsubscribe.baseUrl, token);
  const [admitted] = await selectAudience(pool, campaign, new Date(), [personKey]);
  const rendered = await renderCampaign(
    pool,
    options.decider,
    campaign,
    new Date(),
    {
      personKey,
      holdout: false,
      timeZone: zone?.zone ?? campaign.defaultTimeZone,
      features: admitted?.features ?? {},
    },
    link,
  );
  const subject = `[test] ${rendered.subject}`;
  const outcome = await options.mailer.send({
    from: campaign.sender,
    to: address,
    subject,
    html: rendered.html,
    text: rendered.text,
    messageId: `<test-${randomUUID()}@${campaign.sender.split('@')[1] ?? 'pops.local'}>`,
    headers: {
      'List-Unsubscribe': `<${link}>`,
      'List-Unsubscribe-Post': 'List-Unsubscribe=One-Click',
      'X-Pops-Campaign': `${campaign.name} (test)`,
    },
  });
  return { to: address, subject, outcome };
}
