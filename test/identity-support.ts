/**
 * Shared by the identity tests: Segment messages written through the real NDJSON import, a loop
 * that resolves chunks to the end, the partition the graph holds, a networkx oracle, and a
 * generator of people whose true partition is known by construction.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Pool } from '../common/db.js';
import { mulberry32 } from '../common/random.js';
import { type ChunkSummary, resolveNextChunk } from '../domain/identity/chunk.js';
import { readWatermark } from '../domain/identity/store.js';
import { type IdentityRules, identityRulesSchema } from '../domain/identity/rules.js';
import { importEvents } from '../ingest/events.js';
import { hashedValueOf } from './support.js';

export const DEFAULT_RULES: IdentityRules = identityRulesSchema.parse({});

/** A Segment message as the import reads it. */
export type Message = Record<string, unknown> & { messageId: string; timestamp: string };

export interface MessageFields {
  id: string;
  at: string | number;
  type?: 'track' | 'identify' | 'alias' | 'page';
  userId?: string | number;
  anonymousId?: string | number;
  previousId?: string;
  deviceId?: unknown;
  email?: unknown;
  contextEmail?: unknown;
}

const EPOCH = Date.parse('2024-01-01T00:00:00Z');

/**
 * The emails the tests' messages carried, by their stored (hashed) form: the graph holds only the
 * hash, and the partitions below spell each as the address it was, so expectations stay readable.
 */
const emailsByHash = new Map<string, string>();

function remember(email: unknown): void {
  if (typeof email !== 'string') return;
  const normalized = email.trim().toLowerCase();
  emailsByHash.set(hashedValueOf('email', normalized), normalized);
}

/** `type:value`, with a hashed email spelled as the address the tests sent. */
export function readable(type: string, value: string): string {
  return `${type}:${type === 'email' ? (emailsByHash.get(value) ?? value) : value}`;
}

/** A Segment message; `at` is an ISO instant or minutes after 2024-01-01. */
export function message(fields: MessageFields): Message {
  remember(fields.email);
  remember(fields.contextEmail);
  const type = fields.type ?? 'track';
  const timestamp =
    typeof fields.at === 'number' ? new Date(EPOCH + fields.at * 60_000).toISOString() : fields.at;
  const context: Record<string, unknown> = {};
  if (fields.deviceId !== undefined) context['device'] = { id: fields.deviceId };
  if (fields.contextEmail !== undefined) context['traits'] = { email: fields.contextEmail };
  return {
    type,
    messageId: fields.id,
    timestamp,
    ...(type === 'track' ? { event: 'Viewed' } : {}),
    ...(fields.userId !== undefined ? { userId: fields.userId } : {}),
    ...(fields.anonymousId !== undefined ? { anonymousId: fields.anonymousId } : {}),
    ...(fields.previousId !== undefined ? { previousId: fields.previousId } : {}),
    ...(fields.email !== undefined ? { traits: { email: fields.email } } : {}),
    ...(Object.keys(context).length > 0 ? { context } : {}),
  };
}

let files = 0;

/** Imports the messages in the given order (their events.id order) through `importEvents`. */
export async function importMessages(pool: Pool, messages: readonly Message[]): Promise<void> {
  files += 1;
  const file = path.join(os.tmpdir(), `pops-identity-${process.pid}-${files}.ndjson`);
  fs.writeFileSync(file, messages.map((m) => `${JSON.stringify(m)}\n`).join(''));
  try {
    await importEvents(pool, file, { source: 'identity-test' });
  } finally {
    fs.rmSync(file, { force: true });
  }
}

/** Resolves chunk after chunk from the watermark until one comes back short; returns them all. */
export async function resolveAll(
  pool: Pool,
  rules: IdentityRules = DEFAULT_RULES,
  limit = 1000,
): Promise<ChunkSummary[]> {
  const chunks: ChunkSummary[] = [];
  let after = await readWatermark(pool);
  for (;;) {
    const chunk = await resolveNextChunk(pool, {
      after,
      limit,
      rules,
      workflowId: 'test',
      runId: 'test',
    });
    chunks.push(chunk);
    after = chunk.through;
    if (chunk.events < limit) return chunks;
  }
}

/**
 * Makes the first ledger write of a chunk fail, once: the ledger row is a chunk's last write, so
 * the whole transaction fails late, as a crash just before commit would.
 */
export async function failFirstLedgerWrite(pool: Pool): Promise<void> {
  await pool.query(`
    create sequence fail_once;
    create function fail_first_ledger_write() returns trigger language plpgsql as $$
    begin
      if nextval('fail_once') = 1 then raise exception 'simulated crash before commit'; end if;
      return new;
    end $$;
    create trigger fail_first before insert on identity_chunks
      for each row execute function fail_first_ledger_write();`);
}

/** Empties events and every identity table, and rewinds the watermark. */
export async function resetGraph(pool: Pool): Promise<void> {
  await pool.query(
    `truncate events, persons, identifiers, event_persons, identity_merges, identity_conflicts,
              identity_chunks, identity_unmerges restart identity`,
  );
  await pool.query(`update identity_watermarks set last_event_id = 0`);
  await pool.query(`select setval('person_ids', 1, false)`);
}

/**
 * `type:value` strings grouped by person, each group sorted, groups sorted by their first member.
 */
export type Partition = string[][];

/** Sorts members and groups, so that two partitions compare with toEqual. */
export function normalizePartition(groups: Iterable<Iterable<string>>): Partition {
  return [...groups]
    .map((g) => [...g].sort())
    .sort((a, b) => ((a[0] ?? '') < (b[0] ?? '') ? -1 : 1));
}

/** The stored graph as a partition of its identifiers by canonical person. */
export async function storedPartition(pool: Pool): Promise<Partition> {
  const { rows } = await pool.query<{ person: number; type: string; value: string }>(
    `select p.canonical_id as person, i.type, i.value
       from identifiers i join persons p on p.id = i.person_id`,
  );
  const groups = new Map<number, string[]>();
  for (const row of rows) {
    groups.set(row.person, [...(groups.get(row.person) ?? []), readable(row.type, row.value)]);
  }
  return normalizePartition(groups.values());
}

/** The canonical person of one identifier (an email in clear), or undefined. */
export async function personOf(
  pool: Pool,
  type: string,
  value: string,
): Promise<number | undefined> {
  const { rows } = await pool.query<{ person: number }>(
    `select p.canonical_id as person from identifiers i join persons p on p.id = i.person_id
      where i.type = $1 and i.value = $2`,
    [type, type === 'email' ? hashedValueOf('email', value.trim().toLowerCase()) : value],
  );
  return rows[0]?.person;
}

/** Connected components computed by python networkx over the given nodes and edges. */
export function networkxComponents(
  nodes: readonly string[],
  edges: ReadonlyArray<readonly [string, string]>,
): Partition {
  const script = [
    'import json, sys',
    'import networkx as nx',
    'data = json.load(sys.stdin)',
    'g = nx.Graph()',
    "g.add_nodes_from(data['nodes'])",
    "g.add_edges_from(data['edges'])",
    'print(json.dumps([sorted(c) for c in nx.connected_components(g)]))',
  ].join('\n');
  const out = execFileSync('python3', ['-c', script], {
    input: JSON.stringify({ nodes, edges }),
    maxBuffer: 64 * 1024 * 1024,
  });
  return normalizePartition(JSON.parse(out.toString()) as string[][]);
}

/** The messages in the order they happened (timestamp, then messageId), as a copy. */
export function inTimeOrder(messages: readonly Message[]): Message[] {
  const key = (m: Message) => `${m.timestamp}|${m.messageId}`;
  return [...messages].sort((a, b) => (key(a) < key(b) ? -1 : 1));
}

/** A seeded Fisher-Yates shuffle (a copy). */
export function shuffled<T>(items: readonly T[], seed: number): T[] {
  const random = mulberry32(seed);
  const out = [...items];
  for (let i = out.length - 1; i > 0; i -= 1) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

/** A generated stream of people and the partition and conflicts the default rules must give. */
export interface PeopleStream {
  messages: Message[];
  expected: Partition;
  /** `messageId|type:value` of every identifier the rules must drop. */
  expectedConflicts: string[];
}

/**
 * People with a user id, 1-4 anonymous ids, 1-3 devices of their own and 0-2 emails (written in
 * mixed case, with spaces), over 20 days; disjoint pairs of them share a device, always while
 * logged in; and junk values ride along. The true partition is known by construction: each person's
 * identifiers, plus each shared device for whoever used it first (by timestamp, then messageId):
 * the user_id limit of 1 keeps the other person out, dropping the device (the lowest priority) from
 * each of their messages that carry it. Every count stays within the default limits otherwise.
 */
export function peopleStream(seed: number, people = 40, sharedDevices = 8): PeopleStream {
  if (2 * sharedDevices > people) throw new Error('peopleStream: too many shared devices');
  const random = mulberry32(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
  const between = (min: number, max: number) => min + Math.floor(random() * (max - min + 1));
  const usedMinutes = new Set<number>();
  const minute = () => {
    for (;;) {
      const m = between(0, 20 * 24 * 60);
      if (!usedMinutes.has(m)) {
        usedMinutes.add(m);
        return m;
      }
    }
  };
  const junk = ['guest', 'NULL', ' undefined ', '0', '-1', '00000000-0000-0000-0000-000000000000'];
  const messages: Message[] = [];
  const groups: Array<Set<string>> = [];
  let n = 0;
  const add = (fields: Omit<MessageFields, 'id' | 'at'>, at = minute()) => {
    n += 1;
    const m = message({ id: `s${seed}-m${n}`, at, ...fields });
    messages.push(m);
    return m;
  };

  for (let h = 0; h < people; h += 1) {
    const userId = `u${h}`;
    const anons = Array.from({ length: between(1, 4) }, (_, k) => `a${h}-${k}`);
    const devices = Array.from({ length: between(1, 3) }, (_, k) => `d${h}-${k}`);
    const emails = Array.from({ length: between(0, 2) }, (_, k) => `Person${h}.${k}@Example.com`);
    groups.push(
      new Set([
        `user_id:${userId}`,
        ...anons.map((a) => `anonymous_id:${a}`),
        ...devices.map((d) => `device_id:${d}`),
        ...emails.map((e) => `email:${e.toLowerCase()}`),
      ]),
    );
    for (const anonymousId of anons) {
      add({ userId, anonymousId, deviceId: pick(devices) });
      add({ anonymousId, deviceId: pick(devices) });
      add({ anonymousId, type: 'page' });
    }
    for (const deviceId of devices) add({ userId, deviceId });
    for (const email of emails) add({ type: 'identify', userId, email: `  ${email} ` });
    if (emails[0]) add({ anonymousId: pick(anons), contextEmail: emails[0] });
    add({ type: 'alias', userId, previousId: pick(anons) });
    add({ userId, anonymousId: pick(junk), deviceId: pick(junk) });
    add({ anonymousId: pick(junk), type: 'page' });
  }

  const conflicts: string[] = [];
  for (let s = 0; s < sharedDevices; s += 1) {
    const deviceId = `shared${s}`;
    // Each person shares at most one device, so nobody nears the device limit.
    const [first, second] = [(2 * s) % people, (2 * s + 1) % people];
    const uses = [first, first, second, second].map((h) => add({ userId: `u${h}`, deviceId }));
    const byTime = uses.sort((a, b) =>
      a.timestamp === b.timestamp
        ? a.messageId < b.messageId
          ? -1
          : 1
        : a.timestamp < b.timestamp
          ? -1
          : 1,
    );
    const owner = byTime[0]?.['userId'] as string;
    groups[Number(owner.slice(1))]?.add(`device_id:${deviceId}`);
    for (const use of byTime) {
      if (use['userId'] !== owner) conflicts.push(`${use.messageId}|device_id:${deviceId}`);
    }
  }
  return { messages, expected: normalizePartition(groups), expectedConflicts: conflicts.sort() };
}

/** The stored conflicts as `messageId|type:value`, sorted. */
export async function storedConflicts(pool: Pool): Promise<string[]> {
  const { rows } = await pool.query<{ message_id: string; type: string; value: string }>(
    `select message_id, identifier_type as type, identifier_value as value from identity_conflicts`,
  );
  return rows.map((r) => `${r.message_id}|${readable(r.type, r.value)}`).sort();
}
