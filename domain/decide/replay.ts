/**
 * Replayed real traffic: held-out MovieLens interactions sent to `POST /v1/decide` at a steady
 * rate. A simulated person is a MovieLens userId who rated something at or after the holdout
 * instant; each request asks for k items for one of them (drawn with a seeded generator), and the
 * person clicks (`POST /v1/outcomes`, type click) every recommended item they really rated >= 4
 * in the held-out period. The held-out ratings come from a MovieLens directory's ratings.csv or
 * from the event store; for clicks to be possible they must not be in the event store the API
 * reads (the decider excludes items the person already rated), so the demo and the tests import
 * only the ratings before the holdout. Used by `pops simulate traffic` (cli/simulate.ts), the
 * canary demo and test/canary-replay.test.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Queryable } from '../../common/db.js';

/** One simulated person: who they are and what they really liked after the holdout. */
export interface ReplayPerson {
  userId: string;
  /** Items rated >= 4 at or after the holdout instant. */
  liked: ReadonlySet<string>;
}

/** The rating a held-out click needs. */
export const LIKED_RATING = 4;

function personsOf(rows: Iterable<{ userId: string; itemId: string; rating: number }>) {
  const persons = new Map<string, Set<string>>();
  for (const r of rows) {
    const liked = persons.get(r.userId) ?? new Set<string>();
    if (r.rating >= LIKED_RATING) liked.add(r.itemId);
    persons.set(r.userId, liked);
  }
  return [...persons.entries()]
    .map(([userId, liked]) => ({ userId, liked }))
    .sort((a, b) => Number(a.userId) - Number(b.userId) || a.userId.localeCompare(b.userId));
}

/** The held-out persons of a MovieLens directory's ratings.csv (ratings at or after `from`). */
export function heldOutFromCsv(dir: string, from: Date): ReplayPerson[] {
  const file = path.join(dir, 'ratings.csv');
  if (!fs.existsSync(file)) throw new Error(`no ratings.csv in ${dir}`);
  // ratings.csv is userId,movieId,rating,timestamp: numbers, never quoted.
  const [header = '', ...lines] = fs.readFileSync(file, 'utf8').trimEnd().split('\n');
  const columns = header.trim().split(',');
  const at = (name: string) => {
    const i = columns.indexOf(name);
    if (i < 0) throw new Error(`${file}: no ${name} column`);
    return i;
  };
  const [user, movie, rating, ts] = ['userId', 'movieId', 'rating', 'timestamp'].map(at);
  const cutoff = from.getTime() / 1000;
  const rows: Array<{ userId: string; itemId: string; rating: number }> = [];
  for (const line of lines) {
    const f = line.trim().split(',');
    if (Number(f[ts ?? 3]) < cutoff) continue;
    rows.push({
      userId: f[user ?? 0] ?? '',
      itemId: f[movie ?? 1] ?? '',
      rating: Number(f[rating ?? 2]),
    });
  }
  return personsOf(rows);
}

/** The held-out persons of an event source: its `rated` events at or after `from`. */
export async function heldOutFromEvents(
  db: Queryable,
  source: string,
  from: Date,
): Promise<ReplayPerson[]> {
  const { rows } = await db.query<{ user_id: string; item_id: string; rating: number }>(
    `select user_id, item_id, (properties->>'rating')::float8 as rating
       from events
      where source = $1 and event = 'rated' and ts >= $2
        and user_id is not null and item_id is not null`,
    [source, from],
  );
  return personsOf(rows.map((r) => ({ userId: r.user_id, itemId: r.item_id, rating: r.rating })));
}

/** Counts for one arm, keyed like `canary v2` (or `rules` when the rules answered). */
export interface ArmCounts {
  decisions: number;
  clicks: number;
  /** Decisions with at least one click. */
  clickedDecisions: number;
  /** Clicks per decision. */
  ctr: number;
}

export interface ReplayReport {
  requests: number;
  decisions: number;
  errors: number;
  /** The first few error messages. */
  errorSamples: string[];
  outcomes: number;
  seconds: number;
  /** Requests per second reached. */
  rate: number;
  arms: Record<string, ArmCounts>;
}

export interface ReplayOptions {
  /** The API's base URL, e.g. http://127.0.0.1:8080. */
  api: string;
  /** The API token the requests carry (a role that may decide: ingest, mlops or admin). */
  token?: string | undefined;
  surface: string;
  persons: readonly ReplayPerson[];
  /** Requests per second. */
  rate: number;
  /** Stop after this long (ms); without it, only `signal` stops the replay. */
  durationMs?: number | undefined;
  signal?: AbortSignal | undefined;
  k?: number;
  seed?: number;
  /** Requests in flight at most; a request due while at the limit waits (the rate drops). */
  maxInFlight?: number;
}

/** A small seeded generator (mulberry32): the same seed draws the same persons. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface DecideAnswer {
  decisionId: string;
  version: number | null;
  arm: string;
  items: Array<{ itemId: string }>;
}

async function post(
  api: string,
  route: string,
  body: unknown,
  token: string | undefined,
): Promise<Response> {
  return fetch(`${api}${route}`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
    },
    body: JSON.stringify(body),
  });
}

/** Replays traffic until the duration passes or the signal aborts; answers the counts. */
export async function replayTraffic(options: ReplayOptions): Promise<ReplayReport> {
  if (options.persons.length === 0) throw new Error('no held-out persons to replay');
  if (!(options.rate > 0)) throw new Error('the rate must be positive');
  const random = seededRandom(options.seed ?? 1);
  const k = options.k ?? 10;
  const maxInFlight = options.maxInFlight ?? 64;
  const report: ReplayReport = {
    requests: 0,
    decisions: 0,
    errors: 0,
    errorSamples: [],
    outcomes: 0,
    seconds: 0,
    rate: 0,
    arms: {},
  };
  const fail = (message: string) => {
    report.errors++;
    if (report.errorSamples.length < 5) report.errorSamples.push(message);
  };
  const inFlight = new Set<Promise<void>>();
  const started = performance.now();
  const ends = options.durationMs === undefined ? Infinity : started + options.durationMs;

  const one = async (person: ReplayPerson) => {
    try {
      const response = await post(
        options.api,
        '/v1/decide',
        { surface: options.surface, userId: person.userId, k },
        options.token,
      );
      if (response.status !== 200) {
        fail(`decide answered ${response.status}: ${(await response.text()).slice(0, 200)}`);
        return;
      }
      const decision = (await response.json()) as DecideAnswer;
      report.decisions++;
      const key = decision.version === null ? decision.arm : `${decision.arm} v${decision.version}`;
      const arm = (report.arms[key] ??= { decisions: 0, clicks: 0, clickedDecisions: 0, ctr: 0 });
      arm.decisions++;
      const clicked = decision.items.filter((i) => person.liked.has(i.itemId));
      if (clicked.length > 0) arm.clickedDecisions++;
      for (const item of clicked) {
        const outcome = await post(
          options.api,
          '/v1/outcomes',
          { decisionId: decision.decisionId, itemId: item.itemId, type: 'click' },
          options.token,
        );
        await outcome.arrayBuffer();
        if (outcome.status >= 300) fail(`outcome answered ${outcome.status}`);
        else {
          arm.clicks++;
          report.outcomes++;
        }
      }
    } catch (err) {
      fail(err instanceof Error ? err.message : String(err));
    }
  };

  for (let i = 0; !options.signal?.aborted; i++) {
    const due = started + (i * 1000) / options.rate;
    if (due >= ends) break;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    if (options.signal?.aborted || performance.now() >= ends) break;
    while (inFlight.size >= maxInFlight) await Promise.race(inFlight);
    const person = options.persons[Math.floor(random() * options.persons.length)];
    if (!person) continue;
    report.requests++;
    const request: Promise<void> = one(person).finally(() => inFlight.delete(request));
    inFlight.add(request);
  }
  await Promise.all(inFlight);
  report.seconds = (performance.now() - started) / 1000;
  report.rate = report.requests / Math.max(report.seconds, 1e-9);
  for (const arm of Object.values(report.arms)) {
    arm.ctr = arm.decisions > 0 ? arm.clicks / arm.decisions : 0;
  }
  return report;
}

/** The report as lines of text. */
export function describeReplay(report: ReplayReport): string {
  const lines = [
    `requests ${report.requests} in ${report.seconds.toFixed(1)} s (${report.rate.toFixed(1)}/s),` +
      ` decisions ${report.decisions}, clicks ${report.outcomes}, errors ${report.errors}`,
  ];
  for (const [arm, c] of Object.entries(report.arms).sort()) {
    lines.push(
      `  ${arm.padEnd(12)} decisions ${String(c.decisions).padStart(6)}` +
        `  clicks ${String(c.clicks).padStart(6)}  CTR ${c.ctr.toFixed(4)} clicks/decision` +
        ` (${((100 * c.clickedDecisions) / Math.max(c.decisions, 1)).toFixed(1)}% clicked)`,
    );
  }
  for (const e of report.errorSamples) lines.push(`  error: ${e}`);
  return lines.join('\n');
}
