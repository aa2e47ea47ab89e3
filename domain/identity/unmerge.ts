/**
 * Unmerge and remerge: undoing one merge of the identity graph, and undoing that undo.
 *
 * A person's active merges form a spanning tree over the person rows (nodes) it is made of: each
 * merge links the node of the merged side to the node of the surviving side whose identifiers the
 * message carried (domain/identity/resolve.ts). Unmerging a merge cuts its link, so the person
 * falls into exactly the two sides that merge joined. Identifiers and events belong to nodes, so
 * each side keeps its own, as they were; later merges stay on the side they linked through. The
 * side holding the canonical person keeps it (downstream keys do not churn); the other side's
 * canonical person is the one the merge had merged (or, if that moved to the kept side, its person
 * first seen earliest). While the unmerge stands, a message that would join the two sides again
 * keeps them apart and records a conflict.
 *
 * Remerge reverts an unmerge. When no merge has touched either side since, the person rows return
 * to exactly what they were before the unmerge; otherwise the two sides are joined as a merge
 * would.
 *
 * Both run in one transaction under the identity lock, with their audit row, keyed by the calling
 * workflow run: a retry finds its own row and returns the recorded result.
 */
import type { Pool, PoolClient, Queryable } from '../../common/db.js';
import { withTransaction } from '../../common/db.js';
import { appendAuditIn, auditKey } from '../audit.js';
import { IDENTITY_AUDIT_SUBJECT } from './merge.js';
import { lockGraph } from './store.js';
import {
  activeEdges,
  canonicalOf,
  componentOf,
  findUnmergeByRun,
  insertUnmerge,
  type MergeRow,
  nodeFirstSeen,
  type PersonState,
  type UnmergeRow,
  untouchedSince,
  writePersons,
} from './unmerge-store.js';

/** Thrown for a request that cannot be carried out as asked; `kind` says why. */
export class UnmergeRefusal extends Error {
  constructor(
    readonly kind: 'not_found' | 'conflict',
    message: string,
  ) {
    super(message);
  }
}

/** Who asks, and why: recorded with the unmerge or remerge. */
export interface GraphEditBy {
  reason: string;
  requestedBy: string;
  workflowId: string;
  runId: string;
  /** The time the audit row records. */
  at?: Date;
}

export type UnmergeTarget = { mergeId: number } | { personId: number };

export interface UnmergeResult {
  unmergeId: number;
  mergeId: number;
  /** The canonical person before, which the kept side still has. */
  canonicalBefore: number;
  keptPerson: number;
  /** The other side's canonical person. */
  splitPerson: number;
  keptPersons: number;
  splitPersons: number;
  /** True when this run had already made the unmerge (a retry). */
  replayed: boolean;
}

export interface RemergeResult {
  unmergeId: number;
  mergeId: number;
  canonicalPerson: number;
  /** True when the person rows were restored exactly as they were before the unmerge. */
  exact: boolean;
  replayed: boolean;
}

/** Splits a person back into the two persons that one merge joined; see the module comment. */
export async function unmergeIdentity(
  pool: Pool,
  target: UnmergeTarget,
  by: GraphEditBy,
): Promise<UnmergeResult> {
  return withTransaction(pool, async (client) => {
    await lockGraph(client);
    const done = await findUnmergeByRun(client, by);
    if (done) return { ...done, replayed: true };
    const merge = await findMerge(client, target);
    if (merge.undone_by !== null) throw alreadyUndone(merge);
    const result = await split(client, merge, by);
    const { replayed: _replayed, ...outputs } = result;
    await audit(client, by, 'identity.unmerged', { ...target, reason: by.reason }, outputs);
    return result;
  });
}

async function split(client: PoolClient, merge: MergeRow, by: GraphEditBy) {
  const canonical = await canonicalOf(client, merge.from_node);
  const persons = await componentOf(client, canonical);
  const edges = await activeEdges(client, canonical);
  const fromSide = reachable(
    merge.from_node,
    edges.filter((e) => e.id !== merge.id),
  );
  if (fromSide.has(merge.into_node)) {
    throw new Error(`identity graph: merge ${merge.id} is not a cut of person ${canonical}`);
  }
  const intoSide = new Set([...persons.keys()].filter((id) => !fromSide.has(id)));
  const keptIsFrom = fromSide.has(canonical);
  const [kept, other] = keptIsFrom ? [fromSide, intoSide] : [intoSide, fromSide];
  const firstSeen = await nodeFirstSeen(client, [...persons.keys()], persons);
  const preferred = keptIsFrom ? merge.merged_into : merge.merged_from;
  const splitRoot = other.has(preferred) ? preferred : oldest(other, firstSeen);

  const after = new Map<number, PersonState>();
  const change = (id: number, patch: Partial<PersonState>) => {
    const before = persons.get(id);
    if (before) after.set(id, { ...(after.get(id) ?? before), ...patch });
  };
  for (const id of other) {
    const row = persons.get(id);
    const outside = row?.merged_into != null && !other.has(row.merged_into);
    change(id, { canonical_id: splitRoot, ...(outside ? { merged_into: splitRoot } : {}) });
  }
  change(splitRoot, { merged_into: null, merged_at: null, first_seen_at: minOf(other, firstSeen) });
  for (const id of kept) {
    const row = persons.get(id);
    if (row?.merged_into != null && other.has(row.merged_into)) {
      change(id, { merged_into: canonical });
    }
  }
  change(canonical, { first_seen_at: minOf(kept, firstSeen) });

  const before = [...after.keys()].map((id) => persons.get(id) as PersonState);
  const unmergeId = await insertUnmerge(client, merge, by, {
    canonicalBefore: canonical,
    keptPerson: canonical,
    splitPerson: splitRoot,
    keptPersons: kept.size,
    splitPersons: other.size,
    personsBefore: before,
  });
  await writePersons(client, [...after.values()]);
  await client.query('update identity_merges set undone_by = $2 where id = $1', [
    merge.id,
    unmergeId,
  ]);
  return {
    unmergeId,
    mergeId: merge.id,
    canonicalBefore: canonical,
    keptPerson: canonical,
    splitPerson: splitRoot,
    keptPersons: kept.size,
    splitPersons: other.size,
    replayed: false,
  };
}

/** Reverts an unmerge: the two sides become one person again; see the module comment. */
export async function remergeIdentity(
  pool: Pool,
  unmergeId: number,
  by: GraphEditBy,
): Promise<RemergeResult> {
  return withTransaction(pool, async (client) => {
    await lockGraph(client);
    const { rows } = await client.query<UnmergeRow>(
      `select id, merge_id, from_node, into_node, canonical_before, persons_before, last_merge_id,
              reverted_at, reverted_workflow_id, reverted_run_id, reverted_exact
         from identity_unmerges
        where id = $1 for update`,
      [unmergeId],
    );
    const unmerge = rows[0];
    if (!unmerge) throw new UnmergeRefusal('not_found', `unmerge ${unmergeId} does not exist`);
    if (unmerge.reverted_workflow_id === by.workflowId && unmerge.reverted_run_id === by.runId) {
      const canonicalPerson = await canonicalOf(client, unmerge.from_node);
      const exact = unmerge.reverted_exact ?? false;
      return remergeResult(unmerge, { canonicalPerson, exact }, true);
    }
    if (unmerge.reverted_at !== null) throw alreadyReverted(unmergeId);
    const joined = await join(client, unmerge);
    await client.query(
      `update identity_unmerges
          set reverted_at = now(), reverted_reason = $2, reverted_by = $3,
              reverted_workflow_id = $4, reverted_run_id = $5, reverted_exact = $6
        where id = $1`,
      [unmergeId, by.reason, by.requestedBy, by.workflowId, by.runId, joined.exact],
    );
    await client.query('update identity_merges set undone_by = null where id = $1', [
      unmerge.merge_id,
    ]);
    const result = remergeResult(unmerge, joined, false);
    const { replayed: _replayed, ...outputs } = result;
    await audit(client, by, 'identity.remerged', { unmergeId, reason: by.reason }, outputs);
    return result;
  });
}

interface Joined {
  canonicalPerson: number;
  exact: boolean;
}

function remergeResult(unmerge: UnmergeRow, joined: Joined, replayed: boolean): RemergeResult {
  return { unmergeId: unmerge.id, mergeId: unmerge.merge_id, ...joined, replayed };
}

/** Joins the two sides of an unmerge into one person. */
async function join(client: PoolClient, unmerge: UnmergeRow): Promise<Joined> {
  const a = await canonicalOf(client, unmerge.from_node);
  const b = await canonicalOf(client, unmerge.into_node);
  if (a === b) return { canonicalPerson: a, exact: false };
  const [left, right] = [await componentOf(client, a), await componentOf(client, b)];
  const nodes = [...left.keys(), ...right.keys()];
  if (await untouchedSince(client, unmerge, nodes)) {
    const roots = [left.get(a), right.get(b)] as PersonState[];
    const earliest = roots.reduce((t, r) => (r.first_seen_at < t ? r.first_seen_at : t), '9999');
    const restored = unmerge.persons_before.map((row) =>
      row.id === unmerge.canonical_before
        ? { ...row, first_seen_at: earliest < row.first_seen_at ? earliest : row.first_seen_at }
        : row,
    );
    await writePersons(client, restored);
    return { canonicalPerson: unmerge.canonical_before, exact: true };
  }
  const pick = [a, b].includes(unmerge.canonical_before)
    ? unmerge.canonical_before
    : older(left.get(a) as PersonState, right.get(b) as PersonState).id;
  const loser = pick === a ? right.get(b) : left.get(a);
  const winner = pick === a ? left.get(a) : right.get(b);
  if (!loser || !winner) throw new Error('identity graph: remerge lost a side');
  const moved = [...(pick === a ? right : left).values()].map((row) => ({
    ...row,
    canonical_id: pick,
    ...(row.id === loser.id ? { merged_into: pick, merged_at: new Date().toISOString() } : {}),
  }));
  const first = older(loser, winner).first_seen_at;
  await writePersons(client, [...moved, { ...winner, first_seen_at: first }]);
  return { canonicalPerson: pick, exact: false };
}

async function audit(
  client: PoolClient,
  by: GraphEditBy,
  action: string,
  inputs: Record<string, unknown>,
  outputs: Record<string, unknown>,
): Promise<void> {
  await appendAuditIn(
    client,
    {
      actor: by.requestedBy,
      action,
      subject: IDENTITY_AUDIT_SUBJECT,
      workflowId: by.workflowId,
      runId: by.runId,
      idempotencyKey: auditKey(by.workflowId, by.runId, action),
      inputs,
      outputs,
    },
    by.at,
  );
}

/**
 * Why an unmerge of `target` would be refused now, or undefined: a check before a workflow is
 * started, so that a request that can only fail is refused at once. The unmerge checks again under
 * the lock.
 */
export async function unmergeRefusal(
  db: Queryable,
  target: UnmergeTarget,
): Promise<UnmergeRefusal | undefined> {
  try {
    const merge = await findMerge(db, target, '');
    return merge.undone_by === null ? undefined : alreadyUndone(merge);
  } catch (err) {
    if (err instanceof UnmergeRefusal) return err;
    throw err;
  }
}

/** Why a remerge of `unmergeId` would be refused now, or undefined; see unmergeRefusal. */
export async function remergeRefusal(
  db: Queryable,
  unmergeId: number,
): Promise<UnmergeRefusal | undefined> {
  const { rows } = await db.query<{ reverted_at: Date | null }>(
    'select reverted_at from identity_unmerges where id = $1',
    [unmergeId],
  );
  const row = rows[0];
  if (!row) return new UnmergeRefusal('not_found', `unmerge ${unmergeId} does not exist`);
  return row.reverted_at === null ? undefined : alreadyReverted(unmergeId);
}

function alreadyUndone(merge: MergeRow): UnmergeRefusal {
  return new UnmergeRefusal(
    'conflict',
    `merge ${merge.id} is already undone (unmerge ${merge.undone_by})`,
  );
}

function alreadyReverted(unmergeId: number): UnmergeRefusal {
  return new UnmergeRefusal('conflict', `unmerge ${unmergeId} is already reverted`);
}

async function findMerge(
  client: Queryable,
  target: UnmergeTarget,
  lock = 'for update',
): Promise<MergeRow> {
  const columns = 'id, merged_from, merged_into, from_node, into_node, undone_by';
  if ('mergeId' in target) {
    const { rows } = await client.query<MergeRow>(
      `select ${columns} from identity_merges where id = $1 ${lock}`,
      [target.mergeId],
    );
    if (rows[0]) return rows[0];
    throw new UnmergeRefusal('not_found', `mergeId: merge ${target.mergeId} does not exist`);
  }
  const { rows } = await client.query<MergeRow>(
    `select ${columns} from identity_merges
      where merged_from = $1 and undone_by is null
      order by id desc limit 1 ${lock}`,
    [target.personId],
  );
  if (rows[0]) return rows[0];
  throw new UnmergeRefusal(
    'not_found',
    `personId: person ${target.personId} has no merge into another person to undo`,
  );
}

function reachable(
  start: number,
  edges: ReadonlyArray<{ from_node: number; into_node: number }>,
): Set<number> {
  const next = new Map<number, number[]>();
  const link = (a: number, b: number) => next.set(a, [...(next.get(a) ?? []), b]);
  for (const e of edges) {
    link(e.from_node, e.into_node);
    link(e.into_node, e.from_node);
  }
  const seen = new Set([start]);
  const queue = [start];
  for (let node = queue.pop(); node !== undefined; node = queue.pop()) {
    for (const n of next.get(node) ?? []) {
      if (!seen.has(n)) {
        seen.add(n);
        queue.push(n);
      }
    }
  }
  return seen;
}

function minOf(nodes: Set<number>, firstSeen: Map<number, string>): string {
  return [...nodes].map((id) => firstSeen.get(id) ?? '').reduce((a, b) => (b < a ? b : a));
}

/** The node first seen earliest, ties to the lowest id: the survivor rule of resolution. */
function oldest(nodes: Set<number>, firstSeen: Map<number, string>): number {
  const key = (id: number) => firstSeen.get(id) ?? '';
  return [...nodes].reduce((a, b) => (key(b) < key(a) || (key(b) === key(a) && b < a) ? b : a));
}

function older(a: PersonState, b: PersonState): PersonState {
  if (a.first_seen_at !== b.first_seen_at) return a.first_seen_at < b.first_seen_at ? a : b;
  return a.id < b.id ? a : b;
}
