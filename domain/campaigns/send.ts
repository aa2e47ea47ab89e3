/**
 * The send path shared by campaigns and notices: for each chunk of recipients, read consent,
 * suppression and addresses at that moment (so an opt-out or a suppression stops the rest of a
 * batch in flight), then per person apply local send time and quiet hours, the frequency cap
 * (reserved atomically, given back when the send fails), render, write the ledger row, hand the
 * message to SMTP and mark the row. Holdout persons go through every gate and end as
 * `would_send`. A pending row left by an attempt that died is `unknown` and never sent again.
 */
import { createHash } from 'node:crypto';
import type { Pool } from '../../common/db.js';
import type { Logger } from '../../common/logger.js';
import { consentedPersons, type ConsentPurpose } from '../privacy/consent.js';
import { emailAddresses } from '../privacy/contacts.js';
import { nextLocalTime, quietUntil } from './gates.js';
import {
  abandonPending,
  capAllows,
  claimSend,
  ledgerRows,
  markSend,
  recordOutcome,
  releaseCap,
  reserveCap,
  suppressedPersons,
} from './ledger.js';
import type { Mailer, SendOutcome } from './mailer.js';
import { signUnsubscribe, unsubscribeUrl } from './unsubscribe.js';

/** One person of a run's audience snapshot. */
export interface Recipient {
  personKey: string;
  holdout: boolean;
  timeZone: string;
  features: Record<string, unknown>;
}

export interface RenderedMail {
  subject: string;
  html: string;
  text: string;
}

/** What one run sends and which gates apply (notices skip caps, quiet hours and holdout). */
export interface SendSpec {
  campaign: string;
  fireTime: Date;
  purpose: ConsentPurpose;
  sender: string;
  suppression: boolean;
  localTime?: string | undefined;
  quietHours?: { start: string; end: string; behaviour: 'hold' | 'skip' } | undefined;
  cap?: { max: number; days: number } | undefined;
  render: (recipient: Recipient, unsubscribe: string) => Promise<RenderedMail>;
  /** Read before each chunk: true stops the batch where it is (the campaign was paused). */
  paused?: () => Promise<boolean>;
}

export interface SendContext {
  pool: Pool;
  mailer: Mailer;
  unsubscribe: { secret: string; baseUrl: string };
  now: () => Date;
  log: Logger;
  /** Recipients whose gates are read together, just before their sends. */
  chunk: number;
  /** Pauses between SMTP attempts of a temporary failure (ms); their count bounds the retries. */
  retryDelaysMs: readonly number[];
  heartbeat?: () => void;
}

export type Tally = Record<string, number>;

export interface BatchOutcome {
  counts: Tally;
  /** True when the campaign was paused before the batch finished. */
  paused: boolean;
}

/** Message-ID of a ledger row: the same on every attempt. */
export function messageIdOf(
  spec: { campaign: string; fireTime: Date; sender: string },
  key: string,
) {
  const digest = createHash('sha256')
    .update(`${spec.campaign}\u0000${spec.fireTime.toISOString()}\u0000${key}`)
    .digest('hex')
    .slice(0, 32);
  return `<${digest}@${spec.sender.split('@')[1] ?? 'pops.local'}>`;
}

/** Sends to (or records why not) each recipient; see the module comment. */
export async function sendToRecipients(
  ctx: SendContext,
  spec: SendSpec,
  recipients: readonly Recipient[],
): Promise<BatchOutcome> {
  const counts: Tally = {};
  const bump = (what: string) => {
    counts[what] = (counts[what] ?? 0) + 1;
  };
  for (let i = 0; i < recipients.length; i += ctx.chunk) {
    ctx.heartbeat?.();
    if (spec.paused && (await spec.paused())) return { counts, paused: true };
    const chunk = recipients.slice(i, i + ctx.chunk);
    const outcomes = await sendChunk(ctx, spec, chunk);
    for (const o of outcomes) bump(o);
  }
  return { counts, paused: false };
}

async function sendChunk(
  ctx: SendContext,
  spec: SendSpec,
  chunk: readonly Recipient[],
): Promise<string[]> {
  const keys = chunk.map((r) => r.personKey);
  await abandonPending(ctx.pool, spec.campaign, spec.fireTime, keys);
  const ledger = await ledgerRows(ctx.pool, spec.campaign, spec.fireTime, keys);
  const now = ctx.now();
  const open = chunk.filter((r) => {
    const row = ledger.get(r.personKey);
    return !row || (row.status === 'held' && (row.releaseAt?.getTime() ?? 0) <= now.getTime());
  });
  if (open.length === 0) return [];
  const openKeys = open.map((r) => r.personKey);
  const [consented, suppressed, addresses] = await Promise.all([
    consentedPersons(ctx.pool, openKeys, spec.purpose, now),
    spec.suppression ? suppressedPersons(ctx.pool, openKeys) : Promise.resolve(new Set<string>()),
    emailAddresses(ctx.pool, openKeys),
  ]);
  return Promise.all(
    open.map((r) => {
      const address = addresses.get(r.personKey);
      const gate = !consented.has(r.personKey)
        ? 'no_consent'
        : suppressed.has(r.personKey)
          ? 'suppressed'
          : address === undefined
            ? 'no_address'
            : undefined;
      if (gate || address === undefined) return skip(ctx, spec, r, gate ?? 'no_address');
      return sendOne(ctx, spec, r, address, now);
    }),
  );
}

async function skip(ctx: SendContext, spec: SendSpec, r: Recipient, reason: string) {
  await releaseCap(ctx.pool, { ...keyOf(spec, r) });
  await recordOutcome(ctx.pool, {
    ...keyOf(spec, r),
    holdout: r.holdout,
    status: 'skipped',
    reason,
  });
  return `skipped:${reason}`;
}

function keyOf(spec: SendSpec, r: Recipient) {
  return { campaign: spec.campaign, fireTime: spec.fireTime, personKey: r.personKey };
}

async function sendOne(
  ctx: SendContext,
  spec: SendSpec,
  r: Recipient,
  address: string,
  now: Date,
): Promise<string> {
  const key = keyOf(spec, r);
  const release = whenItMayGo(spec, r, now);
  if (release === 'skip') return skip(ctx, spec, r, 'quiet_hours');
  if (release) {
    await recordOutcome(ctx.pool, {
      ...key,
      holdout: r.holdout,
      status: 'held',
      releaseAt: release,
    });
    return 'held';
  }
  if (r.holdout) {
    if (spec.cap && !(await capAllows(ctx.pool, { personKey: r.personKey, at: now }, spec.cap))) {
      return skip(ctx, spec, r, 'capped');
    }
    await recordOutcome(ctx.pool, { ...key, holdout: true, status: 'would_send' });
    ctx.log.info({ campaign: spec.campaign, person: r.personKey }, 'holdout: would have sent');
    return 'would_send';
  }
  if (spec.cap && !(await reserveCap(ctx.pool, { ...key, at: now }, spec.cap))) {
    return skip(ctx, spec, r, 'capped');
  }
  const token = signUnsubscribe(ctx.unsubscribe.secret, {
    personKey: r.personKey,
    purpose: spec.purpose,
    campaign: spec.campaign,
  });
  const link = unsubscribeUrl(ctx.unsubscribe.baseUrl, token);
  let content: RenderedMail;
  try {
    content = await spec.render(r, link);
  } catch (err) {
    ctx.log.warn({ err, campaign: spec.campaign, person: r.personKey }, 'render failed');
    return skip(ctx, spec, r, 'render_error');
  }
  const messageId = messageIdOf(spec, r.personKey);
  if (!(await claimSend(ctx.pool, { ...key, messageId }))) return 'taken';
  const { outcome, attempts } = await deliver(ctx, {
    from: spec.sender,
    to: address,
    ...content,
    messageId,
    headers: {
      'List-Unsubscribe': `<${link}>`,
      'List-Unsubscribe-Post': 'List-Unsubscribe=One-Click',
      'X-Pops-Campaign': spec.campaign,
    },
  });
  return record(ctx, key, outcome, attempts);
}

/** Undefined: now; a Date: hold until then; 'skip': quiet hours say skip. */
function whenItMayGo(spec: SendSpec, r: Recipient, now: Date): Date | 'skip' | undefined {
  if (spec.localTime) {
    const target = nextLocalTime(spec.localTime, r.timeZone, spec.fireTime);
    if (target.getTime() > now.getTime()) return target;
  }
  if (!spec.quietHours) return undefined;
  const until = quietUntil(spec.quietHours, r.timeZone, now);
  if (!until) return undefined;
  // A holdout person is never mailed, so a hold would only delay its record.
  if (spec.quietHours.behaviour === 'skip') return 'skip';
  return r.holdout ? undefined : until;
}

async function deliver(
  ctx: SendContext,
  mail: Parameters<Mailer['send']>[0],
): Promise<{ outcome: SendOutcome; attempts: number }> {
  let attempts = 0;
  for (;;) {
    attempts++;
    const outcome = await ctx.mailer.send(mail);
    const retryable = outcome.kind === 'temporary' || outcome.kind === 'not_sent';
    const delay = ctx.retryDelaysMs[attempts - 1];
    if (!retryable || delay === undefined) return { outcome, attempts };
    ctx.heartbeat?.();
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

async function record(
  ctx: SendContext,
  key: { campaign: string; fireTime: Date; personKey: string },
  outcome: SendOutcome,
  attempts: number,
): Promise<string> {
  if (outcome.kind === 'sent') {
    await markSend(ctx.pool, key, { status: 'sent', response: outcome.response, attempts });
    return 'sent';
  }
  if (outcome.kind === 'unknown') {
    // It may have been delivered: the cap slot stays taken and the row is never sent again.
    await markSend(ctx.pool, key, { status: 'unknown', response: outcome.response, attempts });
    ctx.log.warn({ campaign: key.campaign, person: key.personKey }, 'send outcome unknown');
    return 'unknown';
  }
  await markSend(ctx.pool, key, {
    status: 'failed',
    response: `${outcome.kind}: ${outcome.response}`,
    attempts,
  });
  await releaseCap(ctx.pool, key);
  return `failed:${outcome.kind}`;
}
