/**
 * The send path shared by campaigns and notices: for each chunk of recipients, read consent,
 * suppression and addresses at that moment (so an opt-out or a suppression stops the rest of a
 * batch in flight), then per person apply local send time and quiet hours, the frequency cap
 * (reserved atomically, given back when the send fails) and render. The chunk's ledger rows are
 * then written `pending` in one statement BEFORE any of its messages goes to SMTP, and marked in
 * one statement after they all ended. Holdout persons go through every gate and end as
 * `would_send`. A pending row left by an attempt that died is `unknown` and never sent again, so
 * a crash costs at most the chunks in flight (two) as unknowns: at-most-once, never twice.
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
  claimSends,
  ledgerRows,
  markSends,
  recordOutcome,
  releaseCap,
  releaseCaps,
  reserveCap,
  suppressedPersons,
} from './ledger.js';
import type { Mailer, OutgoingMail, SendOutcome } from './mailer.js';
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
  // Two chunks in flight, so that one slow answer does not idle the pool while its chunk ends;
  // each chunk still reads its gates just before its own sends.
  let next = 0;
  let paused = false;
  const lane = async () => {
    while (!paused && next < recipients.length) {
      const chunk = recipients.slice(next, next + ctx.chunk);
      next += ctx.chunk;
      ctx.heartbeat?.();
      if (spec.paused && (await spec.paused())) {
        paused = true;
        return;
      }
      for (const o of await sendChunk(ctx, spec, chunk)) bump(o);
    }
  };
  await Promise.all([lane(), lane()]);
  return { counts, paused };
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
  const prepared = await Promise.all(
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
      return prepare(ctx, spec, r, address, now);
    }),
  );
  const outcomes = prepared.filter((p): p is string => typeof p === 'string');
  const ready = prepared.filter((p): p is Prepared => typeof p !== 'string');
  if (ready.length === 0) return outcomes;
  // The ledger rows of the chunk's sends, written before any of them goes (one statement), and
  // marked after all of them ended (one statement): a crash between the two leaves them pending,
  // which the next attempt turns into unknown.
  const claimed = await claimSends(
    ctx.pool,
    spec,
    ready.map((p) => ({ personKey: p.personKey, messageId: p.mail.messageId })),
  );
  const sending = ready.filter((p) => claimed.has(p.personKey));
  const delivered = await Promise.all(
    sending.map(async (p) => ({ personKey: p.personKey, ...(await deliver(ctx, p.mail)) })),
  );
  await markSends(
    ctx.pool,
    spec,
    delivered.map((d) => ({
      personKey: d.personKey,
      status: statusOf(d.outcome),
      response:
        d.outcome.kind === 'sent' ? d.outcome.response : `${d.outcome.kind}: ${d.outcome.response}`,
      attempts: d.attempts,
    })),
  );
  // It may have been delivered: an unknown send keeps its cap slot; a failed one gives it back.
  const failed = delivered.filter((d) => statusOf(d.outcome) === 'failed').map((d) => d.personKey);
  if (failed.length > 0) await releaseCaps(ctx.pool, spec, failed);
  for (const d of delivered) {
    if (d.outcome.kind === 'unknown') {
      ctx.log.warn({ campaign: spec.campaign, person: d.personKey }, 'send outcome unknown');
    }
  }
  return [
    ...outcomes,
    ...ready.filter((p) => !claimed.has(p.personKey)).map(() => 'taken'),
    ...delivered.map((d) =>
      d.outcome.kind === 'sent' || d.outcome.kind === 'unknown'
        ? d.outcome.kind
        : `failed:${d.outcome.kind}`,
    ),
  ];
}

interface Prepared {
  personKey: string;
  mail: OutgoingMail;
}

function statusOf(outcome: SendOutcome): 'sent' | 'unknown' | 'failed' {
  return outcome.kind === 'sent' || outcome.kind === 'unknown' ? outcome.kind : 'failed';
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

/** The person's message, ready to claim and send, or the outcome that stops it here. */
async function prepare(
  ctx: SendContext,
  spec: SendSpec,
  r: Recipient,
  address: string,
  now: Date,
): Promise<string | Prepared> {
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
  return {
    personKey: r.personKey,
    mail: {
      from: spec.sender,
      to: address,
      ...content,
      messageId: messageIdOf(spec, r.personKey),
      headers: {
        'List-Unsubscribe': `<${link}>`,
        'List-Unsubscribe-Post': 'List-Unsubscribe=One-Click',
        'X-Pops-Campaign': spec.campaign,
      },
    },
  };
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
