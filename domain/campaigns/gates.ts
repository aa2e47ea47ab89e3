/**
 * The per-person gates that need no database: the holdout draw (a salted SHA-256 of the person
 * key, so a person is held out of a campaign in every run or in none), quiet hours in the
 * person's zone and the next local send time. Luxon does the zone arithmetic, DST included: a
 * local time that does not exist on a spring-forward day is moved forward by the gap.
 */
import { createHash } from 'node:crypto';
import { DateTime } from 'luxon';

/** The person's draw in [0, 1): stable for a salt and key. */
export function holdoutDraw(salt: string, personKey: string): number {
  const digest = createHash('sha256').update(`${salt}\u0000${personKey}`).digest();
  return digest.readUInt32BE(0) / 2 ** 32;
}

/** Whether the person is in the holdout of `percent` (0-100) under `salt`. */
export function isHeldOut(salt: string, personKey: string, percent: number): boolean {
  return percent > 0 && holdoutDraw(salt, personKey) < percent / 100;
}

function minutesOf(clock: string): number {
  const [h, m] = clock.split(':').map(Number);
  return (h ?? 0) * 60 + (m ?? 0);
}

/** The local time `clock` on `day` (a DateTime in the zone), moved forward over a DST gap. */
function atClock(day: DateTime, clock: string): DateTime {
  const minutes = minutesOf(clock);
  return day.set({
    hour: Math.floor(minutes / 60),
    minute: minutes % 60,
    second: 0,
    millisecond: 0,
  });
}

/**
 * When quiet hours [start, end) hold at `at` in `zone`, the instant they end; else undefined. A
 * window whose start is after its end wraps midnight; start = end is never quiet.
 */
export function quietUntil(
  quiet: { start: string; end: string },
  zone: string,
  at: Date,
): Date | undefined {
  const local = DateTime.fromJSDate(at, { zone });
  const m = local.hour * 60 + local.minute;
  const s = minutesOf(quiet.start);
  const e = minutesOf(quiet.end);
  if (s === e) return undefined;
  const inside = s < e ? m >= s && m < e : m >= s || m < e;
  if (!inside) return undefined;
  let end = atClock(local, quiet.end);
  if (end <= local) end = atClock(local.plus({ days: 1 }), quiet.end);
  return end.toJSDate();
}

/** The first instant at or after `from` when it is `clock` in `zone`. */
export function nextLocalTime(clock: string, zone: string, from: Date): Date {
  const local = DateTime.fromJSDate(from, { zone });
  let target = atClock(local, clock);
  if (target < local) target = atClock(local.plus({ days: 1 }), clock);
  return target.toJSDate();
}
