/**
 * `pops campaign define|list|show|preview|test-send|pause|resume|trigger|backfill|report|lift`:
 * lifecycle email campaigns (docs/campaigns.md). Definitions come from YAML files; runs are
 * started by each campaign's Temporal Schedule, or here.
 */
import { z } from 'zod';
import { mailSettings } from '../domain/campaigns/settings.js';
import {
  backfillCampaign,
  campaignReport,
  defineCampaign,
  describeCampaignSchedule,
  measureLiftNow,
  setCampaignPaused,
  triggerCampaign,
  waitForRun,
} from '../client/campaigns.js';
import { loadCampaignFile } from '../domain/campaigns/file.js';
import type { LiftReport } from '../domain/campaigns/lift.js';
import { createMailer } from '../domain/campaigns/mailer.js';
import { previewPerson, type Preview, testSend } from '../domain/campaigns/preview.js';
import { getCampaign, listCampaigns, listRuns, type RunReport } from '../domain/campaigns/store.js';
import { Decider } from '../domain/decide/decider.js';
import { typesOf } from '../domain/identity/rules.js';
import { parseLookup } from '../domain/identity/show.js';
import { ConsentInputError, personKeyOf } from '../domain/privacy/consent.js';
import type { Queryable } from '../common/db.js';
import { parseArgs, print, table, UsageError } from './output.js';
import {
  configuredIdentityRules,
  hasPollers,
  openDatabase,
  openRuntime,
  runWorkers,
} from './runtime.js';

const json = z.boolean().default(false);
const instant = z.iso.datetime({ offset: true, error: 'is not an ISO 8601 instant' });

async function storedOrFail(db: Parameters<typeof getCampaign>[0], name: string) {
  const found = await getCampaign(db, name);
  if (!found) {
    throw new UsageError(`campaign "${name}" is not defined (pops campaign define <file>)`);
  }
  return found;
}

/** `pops campaign define <file...>`: stores each file's campaign and its schedule. */
export async function defineCommand(files: string[], raw: { json?: boolean }): Promise<void> {
  const opts = parseArgs(z.object({ json }), raw);
  const campaigns = files.map((f) => ({ file: f, campaign: loadCampaignFile(f) }));
  const rt = await openRuntime();
  try {
    const results: Array<{ name: string; created: boolean; changed: boolean; scheduleId: string }> =
      [];
    for (const { file, campaign } of campaigns) {
      const r = await defineCampaign(rt.pool, rt.client, rt.prefix, {
        campaign,
        origin: `file:${file}`,
        actor: rt.config.POPS_ACTOR,
      });
      results.push({ name: campaign.name, ...r });
    }
    print(opts.json, results, () =>
      results
        .map(
          (r) =>
            `${r.name}: ${r.created ? 'created' : r.changed ? 'updated' : 'unchanged'}` +
            ` (schedule ${r.scheduleId})`,
        )
        .join('\n'),
    );
  } finally {
    await rt.close();
  }
}

/** `pops campaign list`. */
export async function listCommand(raw: { json?: boolean }): Promise<void> {
  const opts = parseArgs(z.object({ json }), raw);
  const rt = await openDatabase();
  try {
    const all = await listCampaigns(rt.pool);
    print(opts.json, all, () =>
      all.length === 0
        ? 'no campaigns (pops campaign define <file>)'
        : table(
            ['name', 'schedule', 'paused', 'holdout', 'cap'],
            all.map((c) => [
              c.name,
              'timeZone' in c.definition.schedule
                ? `${c.definition.schedule.cron} ${c.definition.schedule.timeZone}`
                : `${c.definition.schedule.localTime} local` +
                  ` (fires ${c.definition.schedule.cron} UTC)`,
              c.paused ? `yes: ${c.pausedReason ?? ''}` : 'no',
              `${c.definition.holdout.percent}%`,
              c.definition.frequencyCap
                ? `${c.definition.frequencyCap.max}/${c.definition.frequencyCap.days}d`
                : '-',
            ]),
          ),
    );
  } finally {
    await rt.close();
  }
}

/** `pops campaign show <name>`: definition, schedule, recent runs. */
export async function showCommand(name: string, raw: { json?: boolean }): Promise<void> {
  const opts = parseArgs(z.object({ json }), raw);
  const rt = await openRuntime();
  try {
    const found = await storedOrFail(rt.pool, name);
    const schedule = await describeCampaignSchedule(rt.client, name);
    const runs = await listRuns(rt.pool, name, 10);
    print(opts.json, { ...found, schedule, runs }, () =>
      [
        `campaign ${name}${found.paused ? ` (paused: ${found.pausedReason ?? ''})` : ''}`,
        `  from ${found.origin}, updated ${found.updatedAt.toISOString()} by ${found.updatedBy}`,
        `  schedule: ${schedule ? (schedule.paused ? 'paused' : 'active') : 'none'}` +
          (schedule ? `; next ${schedule.nextFireTimes.slice(0, 3).join(', ') || '-'}` : ''),
        `  audience: ${JSON.stringify(found.definition.audience.where)}` +
          ` (consent ${found.definition.audience.purpose})`,
        `  runs: ${runs.map((r) => `${r.fireTime.toISOString()} ${r.status}`).join('; ') || '-'}`,
      ].join('\n'),
    );
  } finally {
    await rt.close();
  }
}

function previewText(p: Preview): string {
  const lines = [
    `${p.personKey} under ${p.campaign} at ${p.at}: ` +
      (p.wouldSend ? 'WOULD SEND' : 'would send nothing'),
    `  zone ${p.timeZone} (${p.zoneSource}); holdout draw ${p.holdout.draw.toFixed(4)}` +
      ` (held out below ${(p.holdout.percent / 100).toFixed(4)})`,
    `  features ${JSON.stringify(p.features)}`,
    ...p.reasons.map((r) => `  - ${r}`),
  ];
  if (p.message) {
    lines.push(
      `  To: ${p.message.to}`,
      `  From: ${p.message.from}`,
      `  Subject: ${p.message.subject}`,
      '  --- text ---',
      p.message.text,
      '  --- html ---',
      p.message.html,
    );
  }
  return lines.join('\n');
}

/**
 * The person key `<person>` names: an identifier (`email:ann@example.com`, `user_id:u1`) resolved
 * through the identity graph, a person id (its canonical person's key), or `unresolved:<raw id>`.
 * Anything else, or what names no person pops knows (no graph person; for a user or anonymous id
 * not in the graph, neither events nor an address under it), is refused.
 */
async function personKeyArg(db: Queryable, person: string): Promise<string> {
  const unknown = () => new UsageError(`<person> ${person}: names no person pops knows`);
  // A raw user or anonymous id not in the graph is a person key of its own, when events were
  // stored under it (not resolved yet) or an address was.
  const unresolved = async (raw: string) => {
    const { rows } = await db.query(
      `select 1 where exists (select 1 from events where person_id = $1)
          or exists (select 1 from contacts where person_key = 'unresolved:' || $1)`,
      [raw],
    );
    if (rows.length === 0) throw unknown();
    return `unresolved:${raw}`;
  };
  if (/^unresolved:.+/.test(person)) return unresolved(person.slice('unresolved:'.length));
  const lookup = parseLookup(person.trim());
  if (lookup && 'personId' in lookup) {
    const { rows } = await db.query<{ key: string }>(
      'select canonical_id::text as key from persons where id = $1',
      [lookup.personId],
    );
    if (rows[0]) return rows[0].key;
    throw new UsageError(`<person> ${person}: no such person id`);
  }
  if (lookup && typesOf(configuredIdentityRules()).includes(lookup.type)) {
    const key = await personKeyOf(db, lookup).catch((err: unknown) => {
      throw err instanceof ConsentInputError ? new UsageError(`<person> ${err.message}`) : err;
    });
    if (!key.startsWith('unresolved:')) return key;
    if (lookup.type !== 'user_id' && lookup.type !== 'anonymous_id') throw unknown();
    return unresolved(lookup.value);
  }
  throw new UsageError(
    `<person> ${JSON.stringify(person)}: give an identifier (email:ann@example.com, user_id:u1),` +
      ' a person id, or unresolved:<raw id>',
  );
}

/** `pops campaign preview <name> <person>`. */
export async function previewCommand(
  name: string,
  person: string,
  raw: { at?: string; json?: boolean },
): Promise<void> {
  const opts = parseArgs(z.object({ at: instant.optional(), json }), raw);
  const rt = await openDatabase();
  const decider = new Decider({ pool: rt.pool });
  try {
    const found = await storedOrFail(rt.pool, name);
    const p = await previewPerson(
      rt.pool,
      { decider, unsubscribe: mailSettings().unsubscribe },
      found.definition,
      await personKeyArg(rt.pool, person),
      opts.at ? new Date(opts.at) : new Date(),
    );
    print(opts.json, p, () => previewText(p));
  } finally {
    await decider.close();
    await rt.close();
  }
}

/** `pops campaign test-send <name> <address>`. */
export async function testSendCommand(
  name: string,
  address: string,
  raw: { person?: string; json?: boolean },
): Promise<void> {
  const opts = parseArgs(z.object({ person: z.string().min(1).optional(), json }), raw);
  const to = parseArgs(z.email(), address);
  const rt = await openDatabase();
  const settings = mailSettings();
  const mailer = createMailer({ ...settings.smtp, maxConnections: 1 });
  const decider = new Decider({ pool: rt.pool });
  try {
    const found = await storedOrFail(rt.pool, name);
    const r = await testSend(
      rt.pool,
      { decider, unsubscribe: settings.unsubscribe, mailer },
      found.definition,
      to,
      opts.person,
    );
    print(opts.json, r, () => `${r.subject} → ${r.to}: ${r.outcome.kind} ${r.outcome.response}`);
    if (r.outcome.kind !== 'sent') process.exitCode = 1;
  } finally {
    mailer.close();
    await decider.close();
    await rt.close();
  }
}

/** `pops campaign pause|resume <name> --reason`. */
export async function pauseCommand(name: string, raw: { reason: string; json?: boolean }) {
  await setPaused(name, true, raw);
}
export async function resumeCommand(name: string, raw: { reason: string; json?: boolean }) {
  await setPaused(name, false, raw);
}
async function setPaused(name: string, paused: boolean, raw: { reason: string; json?: boolean }) {
  const opts = parseArgs(z.object({ reason: z.string().trim().min(1).max(500), json }), raw);
  const rt = await openRuntime();
  try {
    const r = await setCampaignPaused(rt.pool, rt.client, {
      name,
      paused,
      reason: opts.reason,
      actor: rt.config.POPS_ACTOR,
    });
    print(opts.json, r, () =>
      r.changed ? `${name}: ${paused ? 'paused' : 'resumed'}` : `${name}: was already so`,
    );
  } finally {
    await rt.close();
  }
}

function reportText(r: RunReport): string {
  const skipped = Object.entries(r.skipped)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  return (
    `${r.campaign} @ ${r.fireTime}: ${r.status}` +
    (r.status === 'late' ? ` (${Math.round(r.lateByMs / 60000)} min late)` : '') +
    `\n  audience ${r.audience}, sent ${r.sent}, held out ${r.heldOut}, failed ${r.failed},` +
    ` unknown ${r.unknown}, held ${r.held}, skipped ${skipped || '0'}`
  );
}

function liftText(l: LiftReport): string {
  const pct = (v: number | null) => (v === null ? '-' : `${(v * 100).toFixed(2)}%`);
  return (
    `  lift over ${l.horizonDays} d${l.complete ? '' : ' (horizon not over yet)'}:` +
    ` sent ${l.sent.returned}/${l.sent.n} = ${pct(l.sent.rate)},` +
    ` holdout ${l.holdout.returned}/${l.holdout.n} = ${pct(l.holdout.rate)};` +
    ` difference ${pct(l.difference)}` +
    (l.interval ? ` [${pct(l.interval[0])}, ${pct(l.interval[1])}] 95%` : '') +
    (l.pValue === null ? '' : `, p = ${l.pValue.toPrecision(3)}`)
  );
}

/** `pops campaign trigger <name> [--at] [--no-wait]`. */
export async function triggerCommand(
  name: string,
  raw: { at?: string; wait?: boolean; json?: boolean },
): Promise<void> {
  const opts = parseArgs(
    z.object({ at: instant.optional(), wait: z.boolean().default(true), json }),
    raw,
  );
  const rt = await openRuntime();
  try {
    const started = await triggerCampaign(rt.pool, rt.client, rt.prefix, {
      name,
      ...(opts.at ? { fireTime: new Date(opts.at) } : {}),
    });
    if (!opts.wait) {
      print(opts.json, started, () => `started ${started.workflowId}`);
      return;
    }
    // Without a running `pops serve`, this process runs the workers itself until the run ends.
    const workers = (await hasPollers(rt)) ? undefined : await runWorkers(rt);
    try {
      const result = await waitForRun(rt.client, started.workflowId);
      print(opts.json, result, () =>
        result.status === 'late'
          ? `${name} @ ${result.fireTime}: late by ${Math.round(result.lateByMs / 60000)} min` +
            ` (maximum ${Math.round(result.maxLatenessMs / 60000)} min): nothing sent`
          : reportText({ ...result, status: 'completed' }),
      );
    } finally {
      await workers?.stop();
    }
  } finally {
    await rt.close();
  }
}

/** `pops campaign backfill <name> --from --to`. */
export async function backfillCommand(
  name: string,
  raw: { from: string; to: string; json?: boolean },
): Promise<void> {
  const opts = parseArgs(z.object({ from: instant, to: instant, json }), raw);
  const rt = await openRuntime();
  try {
    await backfillCampaign(rt.pool, rt.client, {
      name,
      from: new Date(opts.from),
      to: new Date(opts.to),
    });
    print(
      opts.json,
      opts,
      () => `${name}: the schedule starts every fire time in [${opts.from}, ${opts.to}]`,
    );
  } finally {
    await rt.close();
  }
}

/** `pops campaign report <name>`: recent runs with their run and lift reports. */
export async function reportCommand(name: string, raw: { runs?: string; json?: boolean }) {
  const opts = parseArgs(
    z.object({ runs: z.coerce.number().int().min(1).max(100).default(5), json }),
    raw,
  );
  const rt = await openDatabase();
  try {
    const reports = await campaignReport(rt.pool, name, opts.runs);
    print(opts.json, reports, () =>
      reports.length === 0
        ? `${name}: no runs yet`
        : reports
            .map((r) =>
              [r.run ? reportText(r.run) : r.fireTime, ...r.lift.map(liftText)].join('\n'),
            )
            .join('\n'),
    );
  } finally {
    await rt.close();
  }
}

/** `pops campaign lift <name> --run <fire time> --horizon <days>`. */
export async function liftCommand(
  name: string,
  raw: { run: string; horizon: string; json?: boolean },
): Promise<void> {
  const opts = parseArgs(
    z.object({ run: instant, horizon: z.coerce.number().int().min(1).max(365), json }),
    raw,
  );
  const rt = await openRuntime();
  try {
    await storedOrFail(rt.pool, name);
    const workers = (await hasPollers(rt)) ? undefined : await runWorkers(rt);
    try {
      const l = await measureLiftNow(rt.client, rt.prefix, {
        campaign: name,
        run: opts.run,
        horizonDays: opts.horizon,
      });
      print(opts.json, l, () => `${name} @ ${l.fireTime}\n${liftText(l)}\n  method: ${l.method}`);
    } finally {
      await workers?.stop();
    }
  } finally {
    await rt.close();
  }
}
