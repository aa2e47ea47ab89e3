/**
 * A seeded generator of Segment web and app traffic for the demo's people (user ids 1..N, the same
 * ids the MovieLens simulator rates with), as an NDJSON file `pops import events` reads. Each
 * person browses anonymously on one to three browsers, logs in, may install the app (a device id),
 * and identifies with an email written in varying case; a few households share a tablet between two
 * accounts (the user_id limit keeps them apart and records a conflict), some visitors never log in,
 * and junk ids ride along. The same seed writes the same bytes.
 */
import fs from 'node:fs';
import { mulberry32 } from '../../common/random.js';

/** Options of `simulateSegmentTraffic`. */
export interface TrafficOptions {
  people: number;
  /** Visitors who never log in, besides the people. */
  visitors?: number;
  /** Pairs of people who share a family tablet. */
  sharedTablets?: number;
  seed?: number;
  start?: Date;
}

/** What was written. */
export interface TrafficResult {
  messages: number;
}

const JUNK = ['null', 'guest', '0', '00000000-0000-0000-0000-000000000000'];

/** Writes the traffic to `file` (NDJSON); see the module comment. */
export function simulateSegmentTraffic(file: string, options: TrafficOptions): TrafficResult {
  const random = mulberry32(options.seed ?? 11);
  const start = (options.start ?? new Date('2018-01-01T00:00:00Z')).getTime();
  const lines: string[] = [];
  let clock = start;
  const emit = (message: Record<string, unknown>) => {
    clock += 1000 + Math.floor(random() * 600_000);
    const n = lines.length + 1;
    lines.push(
      JSON.stringify({
        messageId: `sim-web-${n}`,
        timestamp: new Date(clock).toISOString(),
        ...message,
      }),
    );
  };
  const page = (anonymousId: string, extra: Record<string, unknown> = {}) =>
    emit({ type: 'page', anonymousId, properties: { path: '/browse' }, ...extra });

  for (let person = 1; person <= options.people; person += 1) {
    const userId = String(person);
    const browsers = 1 + Math.floor(random() * 3);
    for (let b = 0; b < browsers; b += 1) {
      const anonymousId = `anon-${person}-${b}`;
      page(anonymousId);
      emit({ type: 'track', event: 'Signed In', userId, anonymousId });
    }
    if (random() < 0.6) {
      const device = { id: `app-${person}` };
      emit({ type: 'track', event: 'App Opened', userId, context: { device } });
    }
    const email = `  Person.${person}@Example.com `;
    emit({ type: 'identify', userId, traits: { email: random() < 0.5 ? email : email.trim() } });
    if (random() < 0.2) {
      emit({ type: 'page', userId, anonymousId: JUNK[Math.floor(random() * JUNK.length)] });
    }
  }
  for (let s = 0; s < (options.sharedTablets ?? 0) && 2 * s + 2 <= options.people; s += 1) {
    const device = { id: `family-tablet-${s}` };
    for (const userId of [String(2 * s + 1), String(2 * s + 2)]) {
      emit({ type: 'track', event: 'App Opened', userId, context: { device } });
    }
  }
  for (let v = 0; v < (options.visitors ?? 0); v += 1) page(`visitor-${v}`);

  fs.writeFileSync(file, `${lines.join('\n')}\n`);
  return { messages: lines.length };
}
