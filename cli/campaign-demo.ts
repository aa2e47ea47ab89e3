/**
 * `npm run demo -- --campaign`: the win-back campaign of campaigns/win-back.example.yaml over the
 * data and model of an earlier `npm run demo [--data <MovieLens dir>]`, on in-process workers.
 *
 * What it does, and what it makes up (said in its output too):
 * - the activity feature: `person_days_since_last_rating@1` of each person, computed from their
 *   ratings as of the data's last rating (MovieLens ends years ago), written to the online store
 *   as of now: "as if the data ended today";
 * - contacts and consent: synthetic addresses (`user<id>@movielens.example`, through
 *   domain/privacy/contacts.ts setEmailAddress) and a marketing opt-in for four persons in five
 *   (`recordConsent`, source `campaign-demo`);
 * - the surface `win-back-email` on the demo's model, for the recommendations block;
 * - then it previews one person, defines the campaign (and its schedule), triggers a fire time
 *   now and prints the run report; mail goes to POPS_SMTP_URL, or to the local catcher (.eml
 *   files under <state dir>/mail);
 * - returns: there is no future in the data, so it SIMULATES them (seeded): each sent person
 *   rates again with probability 0.30, each held-out person 0.20, as `track` events after the
 *   fire time; identities are resolved again, then the lift over 14 days is measured and printed.
 */
import { z } from 'zod';
import { stateDir } from '../common/config.js';
import { mulberry32 } from '../common/random.js';
import { startMergeIdentities, waitForMerge } from '../client/identity.js';
import {
  defineCampaign,
  measureLiftNow,
  triggerCampaign,
  waitForRun,
} from '../client/campaigns.js';
import { catcherForServe } from '../domain/campaigns/capture.js';
import { loadCampaignFile } from '../domain/campaigns/file.js';
import { previewPerson } from '../domain/campaigns/preview.js';
import { mailSettings } from '../domain/campaigns/settings.js';
import { Decider } from '../domain/decide/decider.js';
import { createSurface, getSurface } from '../domain/decide/surfaces.js';
import { EXAMPLE_FEATURES_FILE, loadFeatureFile } from '../domain/features/file.js';
import { registerFeatures } from '../domain/features/registry.js';
import { recordConsent } from '../domain/privacy/consent.js';
import { droppedByTombstones } from '../domain/privacy/tombstones.js';
import { setEmailAddress } from '../domain/privacy/contacts.js';
import { configuredIdentityRules, openRuntime, runWorkers, type Runtime } from './runtime.js';
import { print, UsageError } from './output.js';
import { fileURLToPath } from 'node:url';

const WIN_BACK_FILE = fileURLToPath(new URL('../campaigns/win-back.example.yaml', import.meta.url));
const SURFACE = 'win-back-email';

/** The rated source with the most events, and its model (`<source>-ranker`) with a production. */
async function demoModel(rt: Runtime): Promise<{ source: string; model: string }> {
  const { rows } = await rt.pool.query<{ source: string; model: string | null }>(
    `select e.source, (select m.name from models m where m.source = e.source
                        and exists (select 1 from model_aliases a
                                     where a.model = m.name and a.alias = 'production')
                        order by m.name limit 1) as model
       from events e where e.event = 'rated' group by e.source order by count(*) desc limit 1`,
  );
  const found = rows[0];
  if (!found?.model) {
    throw new UsageError('no trained model with a production version: run `npm run demo` first');
  }
  return { source: found.source, model: found.model };
}

/** Each person's days since last rating as of the data's last rating, online as of now. */
async function shiftActivity(rt: Runtime, source: string): Promise<number> {
  const { rowCount } = await rt.pool.query(
    `with r as (
       select coalesce(p.canonical_id::text, 'unresolved:' || e.person_id) as key, e.ts
         from events e
         left join event_persons ep on ep.event_id = e.id
         left join persons p on p.id = ep.person_id
        where e.source = $1 and e.event = 'rated'),
     last as (select max(ts) as t from r)
     insert into feature_online (name, version, entity_id, ts, vals)
     select 'person_days_since_last_rating', 1, r.key, now(),
            array[extract(epoch from (last.t - max(r.ts))) / 86400]
       from r cross join last group by r.key, last.t
     on conflict (name, version, entity_id) do update set ts = excluded.ts, vals = excluded.vals`,
    [source],
  );
  return rowCount ?? 0;
}

/** Synthetic addresses and a marketing opt-in for four in five persons (by their user id). */
async function contactsAndConsent(rt: Runtime): Promise<{ persons: number; consented: number }> {
  const { rows } = await rt.pool.query<{ key: string; user_id: string | null }>(
    `select o.entity_id as key,
            coalesce((select i.value from persons p join identifiers i on i.person_id = p.id
                       where p.canonical_id::text = o.entity_id and i.type = 'user_id'
                       order by i.value limit 1),
                     case when o.entity_id like 'unresolved:%' then substr(o.entity_id, 12) end)
              as user_id
       from feature_online o where o.name = 'person_days_since_last_rating' and o.version = 1`,
  );
  let consented = 0;
  for (const row of rows) {
    if (!row.user_id) continue;
    await setEmailAddress(
      rt.pool,
      row.key,
      `user${row.user_id}@movielens.example`,
      'campaign-demo',
    );
    const opted = Number.parseInt(row.user_id, 10) % 5 !== 0;
    if (opted) consented++;
    await recordConsent(rt.pool, {
      identifier: { type: 'user_id', value: row.user_id },
      purpose: 'marketing',
      granted: opted,
      source: 'campaign-demo',
      actor: rt.config.POPS_ACTOR,
      at: new Date(Date.now() - 60_000),
    });
  }
  return { persons: rows.length, consented };
}

/** Seeded returns after the fire time: 0.30 of sent persons, 0.20 of held-out ones. */
async function simulateReturns(rt: Runtime, fireTime: string): Promise<number> {
  const { rows } = await rt.pool.query<{ person_key: string; status: string; user_id: string }>(
    `select s.person_key, s.status,
            coalesce((select i.value from persons p join identifiers i on i.person_id = p.id
                       where p.canonical_id::text = s.person_key and i.type = 'user_id'
                       order by i.value limit 1), substr(s.person_key, 12)) as user_id
       from campaign_sends s
      where s.campaign = 'win-back' and s.fire_time = $1 and s.status in ('sent', 'would_send')`,
    [fireTime],
  );
  const random = mulberry32(8);
  const returning = rows.filter((r) => random() < (r.status === 'sent' ? 0.3 : 0.2));
  // A person deleted since the send does not come back: their returns are dropped and counted as
  // ingestion drops a deleted person's messages.
  const messages = returning.map((r) => ({
    r,
    row: { user_id: r.user_id, anonymous_id: null, previous_id: null },
    fields: {},
  }));
  const kept = await droppedByTombstones(
    rt.pool,
    'campaign-demo',
    new Date(),
    messages,
    configuredIdentityRules(),
  );
  let n = 0;
  for (const { r } of kept) {
    n++;
    await rt.pool.query(
      `insert into events (message_id, source, type, event, person_id, user_id, ts)
       values ($1, 'campaign-demo', 'track', 'demo_return', $2, $2, now())
       on conflict (message_id) do nothing`,
      [`campaign-demo/${fireTime}/${r.person_key}`, r.user_id],
    );
  }
  return n;
}

/** Runs the campaign demo; see the module comment. */
export async function campaignDemo(args: { json: boolean }): Promise<void> {
  const opts = z.object({ json: z.boolean() }).parse(args);
  const campaign = loadCampaignFile(WIN_BACK_FILE);
  const rt = await openRuntime();
  const catcher = await catcherForServe(rt.config, stateDir(rt.config), rt.log);
  const decider = new Decider({ pool: rt.pool });
  try {
    const workers = await runWorkers(rt);
    try {
      const { source, model } = await demoModel(rt);
      await registerFeatures(rt.pool, loadFeatureFile(EXAMPLE_FEATURES_FILE), rt.config.POPS_ACTOR);
      const shifted = await shiftActivity(rt, source);
      const contacts = await contactsAndConsent(rt);
      if (!(await getSurface(rt.pool, SURFACE))) {
        await createSurface(rt.pool, {
          name: SURFACE,
          model,
          actor: rt.config.POPS_ACTOR,
          reason: 'campaign demo',
        });
      }
      const defined = await defineCampaign(rt.pool, rt.client, rt.prefix, {
        campaign,
        origin: `file:${WIN_BACK_FILE}`,
        actor: rt.config.POPS_ACTOR,
      });
      const { rows } = await rt.pool.query<{ key: string }>(
        `select entity_id as key from feature_online
          where name = 'person_days_since_last_rating' and vals[1] between 14 and 60
          order by entity_id limit 1`,
      );
      const sample = rows[0]?.key;
      const preview = sample
        ? await previewPerson(
            rt.pool,
            { decider, unsubscribe: mailSettings().unsubscribe },
            campaign,
            sample,
            new Date(),
          )
        : undefined;
      const started = await triggerCampaign(rt.pool, rt.client, rt.prefix, { name: campaign.name });
      const run = await waitForRun(rt.client, started.workflowId);
      const returns = await simulateReturns(rt, started.fireTime);
      await waitForMerge(
        rt.client,
        await startMergeIdentities(rt.client, rt.prefix, {
          requestedBy: rt.config.POPS_ACTOR,
          rules: configuredIdentityRules(),
        }),
      );
      const lift = await measureLiftNow(rt.client, rt.prefix, {
        campaign: campaign.name,
        run: started.fireTime,
        horizonDays: 14,
      });
      const report = { source, model, shifted, contacts, defined, preview, run, returns, lift };
      print(opts.json, report, () =>
        [
          `campaign demo on source ${source}, model ${model}`,
          `  activity: ${shifted} persons' days since last rating, as of the data's end,` +
            ' online as of now',
          `  contacts: ${contacts.persons} synthetic addresses;` +
            ` marketing opt-in ${contacts.consented}`,
          `  campaign ${campaign.name}: ` +
            (defined.created ? 'created' : defined.changed ? 'updated' : 'unchanged') +
            ` (schedule ${defined.scheduleId}); pops campaign show win-back`,
          preview
            ? `  preview of ${preview.personKey}: ${preview.wouldSend ? 'would send' : 'nothing'}` +
              (preview.reasons.length ? ` (${preview.reasons.join('; ')})` : '') +
              `\n    Subject: ${preview.message?.subject ?? '-'}`
            : '  preview: nobody has 14-60 days since a rating',
          run.status === 'late'
            ? `  run ${started.fireTime}: late`
            : `  run ${started.fireTime}: audience ${run.audience}, sent ${run.sent},` +
              ` held out ${run.heldOut}, failed ${run.failed}, unknown ${run.unknown},` +
              ` skipped ${JSON.stringify(run.skipped)}`,
          catcher ? `  mail: .eml files in ${catcher.dir}` : '  mail: sent to POPS_SMTP_URL',
          `  SIMULATED returns after the fire time (sent 0.30, holdout 0.20, seeded): ${returns}`,
          `  lift over 14 d${lift.complete ? '' : ' (horizon not over)'}:` +
            ` sent ${lift.sent.returned}/${lift.sent.n},` +
            ` holdout ${lift.holdout.returned}/${lift.holdout.n},` +
            ` difference ${lift.difference?.toFixed(3) ?? '-'}` +
            (lift.interval
              ? ` [${lift.interval[0].toFixed(3)}, ${lift.interval[1].toFixed(3)}] 95%`
              : ''),
          '  again later: pops campaign report win-back',
        ].join('\n'),
      );
    } finally {
      await workers.stop();
    }
  } finally {
    await decider.close();
    await catcher?.close();
    await rt.close();
  }
}
