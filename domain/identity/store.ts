/**
 * The identity graph's SQL: reading events after the watermark, loading the slice of the graph a
 * chunk touches, and writing a resolution. Writes happen inside the caller's transaction, under the
 * identity lock, so that the graph, the ledger and the watermark move together or not at all.
 */
import type { Pool, PoolClient, Queryable } from '../../common/db.js';
import { withTransaction } from '../../common/db.js';
import type { Identifier, IdentityEventRow } from './identifiers.js';
import type { GraphSlice, Resolution } from './resolve.js';

const IDENTITY_LOCK = 0x69646e74; // 'idnt'
const WATERMARK = 'events';
const LOCK_NOT_AVAILABLE = '55P03';

/**
 * Serializes every writer of the identity graph (and person id assignment) until commit. Also
 * prices random reads as on SSD for the rest of the transaction, so that the updates keyed by
 * person ids use the indexes instead of scanning `persons` (PostgreSQL's default assumes disks).
 */
export async function lockGraph(client: PoolClient): Promise<void> {
  await client.query('select pg_advisory_xact_lock($1::bigint)', [IDENTITY_LOCK]);
  await client.query(`select set_config('random_page_cost', '1.1', true)`);
}

/**
 * The highest events.id below which no insert can still be in flight. A bigserial id is taken when
 * a row is inserted, not when it commits, so a reader that trusted max(id) could pass over a lower
 * id committed a moment later and never see it. A SHARE lock waits until no transaction is writing
 * `events`; every id allocated so far is then committed or gone, and later inserts get higher ids.
 * The lock is held for one statement; while it waits, new inserts queue behind it, so it gives up
 * after `lockTimeout` and the caller retries.
 */
export async function settledHorizon(pool: Pool, lockTimeout = '2s'): Promise<number> {
  return withTransaction(pool, async (client) => {
    await client.query(`select set_config('lock_timeout', $1, true)`, [lockTimeout]);
    await client.query('lock table events in share mode').catch((err: { code?: string }) => {
      if (err.code !== LOCK_NOT_AVAILABLE) throw err;
      throw new Error(
        `events are being written (an import is in flight) for longer than ${lockTimeout};` +
          ' identity resolution waits for it and will be retried',
      );
    });
    const { rows } = await client.query<{ max: number }>(
      'select coalesce(max(id), 0)::bigint as max from events',
    );
    return rows[0]?.max ?? 0;
  });
}

/** Every event with an id up to this one has been resolved. */
export async function readWatermark(db: Queryable): Promise<number> {
  const { rows } = await db.query<{ last_event_id: number }>(
    'select last_event_id from identity_watermarks where name = $1',
    [WATERMARK],
  );
  const row = rows[0];
  if (!row) throw new Error(`identity watermark "${WATERMARK}" is missing`);
  return row.last_event_id;
}

/** Up to `limit` events with after < id <= horizon, in id order. */
export async function readChunkEvents(
  db: Queryable,
  after: number,
  horizon: number,
  limit: number,
): Promise<IdentityEventRow[]> {
  const { rows } = await db.query<IdentityEventRow>(
    `select id, message_id as "messageId", ts, user_id as "userId", anonymous_id as "anonymousId",
            previous_id as "previousId", traits, context, properties
       from events
      where id > $1::bigint and id <= $2::bigint
      order by id
      limit $3`,
    [after, horizon, limit],
  );
  return rows;
}

interface IdentifierRow {
  type: string;
  value: string;
  firstSeenAt: Date;
  personId: number;
  canonicalId: number;
}

/**
 * The canonical persons of the given identifiers, those identifiers, and every identifier of the
 * `limited` types those persons hold (what the limit checks count).
 */
export async function loadSlice(
  db: Queryable,
  identifiers: readonly Identifier[],
  limited: readonly string[],
): Promise<GraphSlice> {
  const found = await db.query<IdentifierRow>(
    `select i.type, i.value, i.first_seen_at as "firstSeenAt", i.person_id as "personId",
            p.canonical_id as "canonicalId"
       from unnest($1::text[], $2::text[]) as k(type, value)
       join identifiers i on i.type = k.type and i.value = k.value
       join persons p on p.id = i.person_id`,
    [identifiers.map((i) => i.type), identifiers.map((i) => i.value)],
  );
  const roots = [...new Set(found.rows.map((r) => r.canonicalId))];
  const persons = await db.query<{ id: number; firstSeenAt: Date }>(
    'select id, first_seen_at as "firstSeenAt" from persons where id = any($1::bigint[])',
    [roots],
  );
  const members =
    roots.length === 0 || limited.length === 0
      ? { rows: [] }
      : await db.query<IdentifierRow>(
          `select i.type, i.value, i.first_seen_at as "firstSeenAt", i.person_id as "personId",
                  p.canonical_id as "canonicalId"
             from persons p
             join identifiers i on i.person_id = p.id
            where p.canonical_id = any($1::bigint[]) and i.type = any($2::text[])`,
          [roots, limited],
        );
  const next = await db.query<{ next: number }>(
    // Above every stored id and every id ever deleted (the sequence person_ids, moved by a
    // trigger on persons), so a deleted person's id is never given to another.
    `select greatest(coalesce(max(id), 0),
                     (select case when is_called then last_value else 0 end from person_ids))::bigint
            + 1 as next
       from persons`,
  );
  return {
    persons: persons.rows,
    identifiers: [...found.rows, ...members.rows],
    nextPersonId: next.rows[0]?.next ?? 1,
    separations: roots.length === 0 ? [] : await loadSeparations(db, roots),
  };
}

/** The sides of active unmerges that the given canonical persons hold. */
async function loadSeparations(
  db: Queryable,
  roots: readonly number[],
): Promise<NonNullable<GraphSlice['separations']>> {
  const { rows } = await db.query<{ personId: number; unmergeId: number; side: 'from' | 'into' }>(
    `select p.canonical_id as "personId", u.id as "unmergeId", s.side
       from identity_unmerges u
       cross join lateral (values ('from', u.from_node), ('into', u.into_node)) as s(side, node)
       join persons p on p.id = s.node
      where u.reverted_at is null and p.canonical_id = any($1::bigint[])`,
    [roots],
  );
  return rows;
}

/** Who resolved a chunk: recorded with each merge and conflict. */
export interface ResolvedBy {
  workflowId: string;
  runId: string;
  chunkAfter: number;
}

/** Writes everything a resolution changes. Person rows first: the other tables reference them. */
export async function writeResolution(
  client: PoolClient,
  resolution: Resolution,
  by: ResolvedBy,
): Promise<void> {
  await insertPersons(client, resolution);
  await updatePersons(client, resolution);
  await insertIdentifiers(client, resolution);
  await insertAttributions(client, resolution);
  await insertMerges(client, resolution, by);
  await insertConflicts(client, resolution, by);
}

async function insertPersons(client: PoolClient, { newPersons }: Resolution): Promise<void> {
  if (newPersons.length === 0) return;
  await client.query(
    `insert into persons (id, canonical_id, merged_into, first_seen_at, first_event_id, merged_at)
     select n.id, n.canonical_id, n.merged_into, n.first_seen_at, n.first_event_id,
            case when n.merged_into is null then null else now() end
       from unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::timestamptz[], $5::bigint[])
            as n(id, canonical_id, merged_into, first_seen_at, first_event_id)`,
    [
      newPersons.map((p) => p.id),
      newPersons.map((p) => p.canonicalId),
      newPersons.map((p) => p.mergedInto),
      newPersons.map((p) => p.firstSeenAt),
      newPersons.map((p) => p.firstEventId),
    ],
  );
}

/**
 * Stored persons: merged ones point at their survivor, and so does everything that pointed at them.
 */
async function updatePersons(client: PoolClient, { changedPersons }: Resolution): Promise<void> {
  if (changedPersons.length === 0) return;
  await client.query(
    `update persons p
        set canonical_id = c.canonical_id,
            merged_into = coalesce(c.merged_into, p.merged_into),
            merged_at = case when c.merged_into is null then p.merged_at else now() end,
            first_seen_at = least(p.first_seen_at, c.first_seen_at)
       from unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::timestamptz[])
            as c(id, canonical_id, merged_into, first_seen_at)
      where p.id = c.id`,
    [
      changedPersons.map((p) => p.id),
      changedPersons.map((p) => p.canonicalId),
      changedPersons.map((p) => p.mergedInto),
      changedPersons.map((p) => p.firstSeenAt),
    ],
  );
  const merged = changedPersons.filter((p) => p.mergedInto !== null);
  if (merged.length === 0) return;
  await client.query(
    `update persons p
        set canonical_id = m.canonical_id
       from unnest($1::bigint[], $2::bigint[]) as m(old, canonical_id)
      where p.canonical_id = m.old and p.id <> m.old`,
    [merged.map((p) => p.id), merged.map((p) => p.canonicalId)],
  );
}

async function insertIdentifiers(client: PoolClient, resolution: Resolution): Promise<void> {
  const added = resolution.newIdentifiers;
  if (added.length > 0) {
    await client.query(
      `insert into identifiers (type, value, person_id, first_seen_at, first_event_id)
       select * from unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[], $5::bigint[])`,
      [
        added.map((i) => i.type),
        added.map((i) => i.value),
        added.map((i) => i.personId),
        added.map((i) => i.firstSeenAt),
        added.map((i) => i.firstEventId),
      ],
    );
  }
  const earlier = resolution.earlierIdentifiers;
  if (earlier.length === 0) return;
  await client.query(
    `update identifiers i
        set first_seen_at = least(i.first_seen_at, e.first_seen_at)
       from unnest($1::text[], $2::text[], $3::timestamptz[]) as e(type, value, first_seen_at)
      where i.type = e.type and i.value = e.value`,
    [earlier.map((i) => i.type), earlier.map((i) => i.value), earlier.map((i) => i.firstSeenAt)],
  );
}

async function insertAttributions(client: PoolClient, { attributions }: Resolution): Promise<void> {
  if (attributions.length === 0) return;
  await client.query(
    `insert into event_persons (event_id, person_id)
     select * from unnest($1::bigint[], $2::bigint[])
     on conflict (event_id) do nothing`,
    [attributions.map((a) => a.eventId), attributions.map((a) => a.personId)],
  );
}

async function insertMerges(
  client: PoolClient,
  { merges }: Resolution,
  by: ResolvedBy,
): Promise<void> {
  if (merges.length === 0) return;
  await client.query(
    `insert into identity_merges (merged_from, merged_into, from_node, into_node, event_id,
                                  message_id, decisions, workflow_id, run_id, chunk_after)
     select m.merged_from, m.merged_into, m.from_node, m.into_node, m.event_id, m.message_id,
            m.decisions, $2, $3, $4
       from jsonb_to_recordset($1::jsonb)
            as m(merged_from bigint, merged_into bigint, from_node bigint, into_node bigint,
                 event_id bigint, message_id text, decisions jsonb, ord int)
      order by m.ord
     on conflict (event_id, merged_from) do nothing`,
    [
      JSON.stringify(
        merges.map((m, ord) => ({
          merged_from: m.mergedFrom,
          merged_into: m.mergedInto,
          from_node: m.fromNode,
          into_node: m.intoNode,
          event_id: m.eventId,
          message_id: m.messageId,
          decisions: m.decisions,
          ord,
        })),
      ),
      by.workflowId,
      by.runId,
      by.chunkAfter,
    ],
  );
}

async function insertConflicts(
  client: PoolClient,
  { conflicts }: Resolution,
  by: ResolvedBy,
): Promise<void> {
  if (conflicts.length === 0) return;
  await client.query(
    `insert into identity_conflicts (event_id, message_id, identifier_type, identifier_value,
                                     identifier_person_id, attributed_person_id, reason, rule,
                                     workflow_id, run_id, chunk_after)
     select c.event_id, c.message_id, c.type, c.value, c.identifier_person_id,
            c.attributed_person_id, c.reason, c.rule, $2, $3, $4
       from jsonb_to_recordset($1::jsonb)
            as c(event_id bigint, message_id text, type text, value text,
                 identifier_person_id bigint, attributed_person_id bigint, reason text,
                 rule jsonb, ord int)
      order by c.ord
     on conflict (event_id, identifier_type, identifier_value) do nothing`,
    [
      JSON.stringify(
        conflicts.map((c, ord) => ({
          event_id: c.eventId,
          message_id: c.messageId,
          type: c.type,
          value: c.value,
          identifier_person_id: c.identifierPersonId,
          attributed_person_id: c.attributedPersonId,
          reason: c.reason,
          rule: { breaches: c.breaches },
          ord,
        })),
      ),
      by.workflowId,
      by.runId,
      by.chunkAfter,
    ],
  );
}

/** A chunk already resolved from `after`, as the ledger recorded it. */
export async function findChunk<S>(db: Queryable, after: number): Promise<S | undefined> {
  const { rows } = await db.query<{ summary: S }>(
    'select summary from identity_chunks where after_event_id = $1',
    [after],
  );
  return rows[0]?.summary;
}

/** Moves the watermark and records the chunk in the ledger (same transaction as the graph). */
export async function recordChunk(
  client: PoolClient,
  chunk: { after: number; through: number; rules: object; rulesSha256: string; summary: object },
  by: ResolvedBy,
): Promise<void> {
  await client.query(
    `update identity_watermarks set last_event_id = $2, updated_at = now() where name = $1`,
    [WATERMARK, chunk.through],
  );
  await client.query(
    `insert into identity_chunks (after_event_id, through_event_id, summary, rules, rules_sha256,
                                  workflow_id, run_id)
     values ($1, $2, $3::jsonb, $4::jsonb, $5, $6, $7)`,
    [
      chunk.after,
      chunk.through,
      JSON.stringify(chunk.summary),
      JSON.stringify(chunk.rules),
      chunk.rulesSha256,
      by.workflowId,
      by.runId,
    ],
  );
}
