/**
 * Aliases of the model registry: names (`production`, `candidate`, `previous`, custom) that point at
 * one version of a model. Every move writes the alias and one append-only history row (from, to,
 * who, why, which workflow) in one transaction, under the model's registry lock (the one
 * registrations take). A move is keyed by its moveKey: a move whose key is already recorded
 * changes nothing and answers what was recorded, so a retried activity repeats nothing.
 *
 * A rollback restores the version production held before the current one: by default the one
 * `previous` points at. The new `previous` is the version production held when the restored one was
 * promoted (the promotions of production in the history), so successive rollbacks walk back along
 * the promotions, skipping versions that were rolled away from.
 */
import { z } from 'zod';
import type { Pool, PoolClient, Queryable } from '../common/db.js';
import { withTransaction } from '../common/db.js';
import { describeZodError, InputError } from '../common/failures.js';
import { appendAuditIn } from './audit.js';
import { modelNameSchema, plainText } from './retrain.js';
import { aliasNameSchema, PREVIOUS, PRODUCTION, versionNumberSchema } from './rollback.js';

/**
 * One recorded move of an alias; a null version: the alias did not exist (from) or was removed (to).
 */
export interface AliasMove {
  model: string;
  alias: string;
  fromVersion: number | null;
  toVersion: number | null;
  actor: string;
  reason: string;
  workflowId: string | null;
  moveKey: string;
  at: string;
}

/** Thrown for a move that cannot be made as asked; `kind` says why, the message names the value. */
export class RegistryRefusal extends InputError {
  constructor(
    readonly kind: 'validation' | 'not_found' | 'conflict',
    message: string,
  ) {
    super(message);
  }
}

/** What moved an alias (stored with the history row; rollbacks follow the promotions). */
export type MoveKind = 'register' | 'promote' | 'rollback' | 'move';

const moveKeySchema = z.string().min(1).max(1000);
const byWhom = {
  actor: plainText(200),
  reason: plainText(500),
  workflowId: z.string().min(1).max(1000).nullable(),
  moveKey: moveKeySchema,
};
const moveSchema = z.object({
  model: modelNameSchema,
  alias: aliasNameSchema,
  version: versionNumberSchema.nullable(),
  ...byWhom,
});
const promoteSchema = z.object({ model: modelNameSchema, version: versionNumberSchema, ...byWhom });
const rollbackSchema = z.object({
  model: modelNameSchema,
  toVersion: versionNumberSchema.optional(),
  ...byWhom,
});

export type MoveRequest = z.output<typeof moveSchema>;

function parsed<S extends z.ZodType>(schema: S, input: unknown, what: string): z.output<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  throw new RegistryRefusal(
    'validation',
    `invalid ${what}: ${describeZodError(result.error, input)}`,
  );
}

interface HistoryRow {
  model: string;
  alias: string;
  from_version: number | null;
  to_version: number | null;
  actor: string;
  reason: string;
  workflow_id: string | null;
  move_key: string;
  at: Date;
}

function fromRow(row: HistoryRow): AliasMove {
  return {
    model: row.model,
    alias: row.alias,
    fromVersion: row.from_version,
    toVersion: row.to_version,
    actor: row.actor,
    reason: row.reason,
    workflowId: row.workflow_id,
    moveKey: row.move_key,
    at: row.at.toISOString(),
  };
}

/** Serializes registry writes of one model until the transaction ends. */
export async function lockModel(client: PoolClient, model: string): Promise<void> {
  await client.query('select pg_advisory_xact_lock(hashtext($1))', [`registry/${model}`]);
}

/** The move recorded under `moveKey` if it moved this alias of this model; a conflict otherwise. */
async function recorded(
  db: Queryable,
  key: string,
  model: string,
  alias: string,
): Promise<AliasMove | undefined> {
  const found = await db.query<HistoryRow>(
    'select * from model_alias_history where move_key = $1',
    [key],
  );
  const row = found.rows[0];
  if (!row) return undefined;
  if (row.model !== model || row.alias !== alias) {
    throw new RegistryRefusal(
      'conflict',
      `move key ${JSON.stringify(key)} already moved alias "${row.alias}"` +
        ` of model "${row.model}", not "${alias}" of "${model}"`,
    );
  }
  return fromRow(row);
}

/** What a recorded move of production answers when its promotion or rollback is retried. */
function productionMove(done: AliasMove): { from: number | null; to: number } {
  if (done.toVersion === null) {
    throw new RegistryRefusal(
      'conflict',
      `move key ${JSON.stringify(done.moveKey)} already removed production of "${done.model}"`,
    );
  }
  return { from: done.fromVersion, to: done.toVersion };
}

async function requireModel(db: Queryable, model: string): Promise<void> {
  const found = await db.query('select 1 from models where name = $1', [model]);
  if ((found.rowCount ?? 0) === 0) {
    throw new RegistryRefusal('not_found', `model "${model}" is not declared`);
  }
}

async function requireVersion(db: Queryable, model: string, version: number): Promise<void> {
  await requireModel(db, model);
  const found = await db.query('select 1 from model_versions where model = $1 and version = $2', [
    model,
    version,
  ]);
  if ((found.rowCount ?? 0) === 0) {
    throw new RegistryRefusal('not_found', `model "${model}" has no version ${version}`);
  }
}

/**
 * Writes one move (the alias and its history row) inside the caller's transaction, which holds the
 * model's lock; the model and version are known to exist.
 */
export async function applyMove(
  client: PoolClient,
  m: MoveRequest & { kind: MoveKind },
): Promise<AliasMove> {
  const current = await client.query<{ version: number }>(
    'select version from model_aliases where model = $1 and alias = $2',
    [m.model, m.alias],
  );
  if (m.version === null) {
    await client.query('delete from model_aliases where model = $1 and alias = $2', [
      m.model,
      m.alias,
    ]);
  } else {
    await client.query(
      `insert into model_aliases (model, alias, version, updated_by, move_key)
       values ($1, $2, $3, $4, $5)
       on conflict (model, alias) do update
         set version = excluded.version, updated_at = now(), updated_by = excluded.updated_by,
             move_key = excluded.move_key`,
      [m.model, m.alias, m.version, m.actor, m.moveKey],
    );
  }
  const inserted = await client.query<HistoryRow>(
    `insert into model_alias_history (model, alias, from_version, to_version, kind, actor, reason,
         workflow_id, move_key)
       values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
     returning *`,
    [
      m.model,
      m.alias,
      current.rows[0]?.version ?? null,
      m.version,
      m.kind,
      m.actor,
      m.reason,
      m.workflowId,
      m.moveKey,
    ],
  );
  return fromRow(inserted.rows[0] as HistoryRow);
}

/** moveAlias inside the caller's transaction. */
async function moveIn(client: PoolClient, m: MoveRequest): Promise<AliasMove> {
  await lockModel(client, m.model);
  const done = await recorded(client, m.moveKey, m.model, m.alias);
  if (done) return done;
  if (m.version === null) await requireModel(client, m.model);
  else await requireVersion(client, m.model, m.version);
  return applyMove(client, { ...m, kind: 'move' });
}

/**
 * Points alias at version (null removes it) in one transaction with its history row; a move with a
 * moveKey already recorded changes nothing and returns the recorded move. Refuses an unknown
 * model/version naming them.
 */
export async function moveAlias(
  pool: Pool,
  m: {
    model: string;
    alias: string;
    version: number | null;
    actor: string;
    reason: string;
    workflowId: string | null;
    moveKey: string;
  },
): Promise<AliasMove> {
  const input = parsed(moveSchema, m, 'alias move');
  return withTransaction(pool, (client) => moveIn(client, input));
}

/**
 * A move made by hand (the CLI or the API, outside any workflow): moveAlias, and its audit row
 * `model.alias-moved` in the same transaction. `production` is refused: it moves only through
 * promotion and rollback.
 */
export async function moveAliasByHand(
  pool: Pool,
  m: { model: string; alias: string; version: number | null; actor: string; reason: string },
  moveKey: string,
): Promise<AliasMove> {
  const input = parsed(moveSchema, { ...m, workflowId: null, moveKey }, 'alias move');
  if (input.alias === PRODUCTION) {
    throw new RegistryRefusal(
      'validation',
      'alias "production" moves only by promotion or rollback (pops models rollback <model>)',
    );
  }
  return withTransaction(pool, async (client) => {
    const move = await moveIn(client, input);
    await appendAuditIn(client, {
      actor: input.actor,
      action: 'model.alias-moved',
      subject: `model/${input.model}`,
      idempotencyKey: `alias-move/${moveKey}`,
      inputs: { alias: input.alias, version: input.version, reason: input.reason, moveKey },
      outputs: { from: move.fromVersion, to: move.toVersion },
    });
    return move;
  });
}

/**
 * production := version and previous := the old production (if any and different), one
 * transaction, two history rows, idempotent by moveKey.
 */
export async function promoteVersion(
  pool: Pool,
  p: {
    model: string;
    version: number;
    actor: string;
    reason: string;
    workflowId: string | null;
    moveKey: string;
  },
): Promise<{ from: number | null; to: number }> {
  const input = parsed(promoteSchema, p, 'promotion');
  return withTransaction(pool, async (client) => {
    await lockModel(client, input.model);
    const done = await recorded(client, input.moveKey, input.model, PRODUCTION);
    if (done) return productionMove(done);
    await requireVersion(client, input.model, input.version);
    const move = { ...input, kind: 'promote' as const };
    const production = await applyMove(client, { ...move, alias: PRODUCTION });
    const from = production.fromVersion;
    if (from !== null && from !== input.version) {
      const moveKey = `${input.moveKey}/${PREVIOUS}`;
      await applyMove(client, { ...move, alias: PREVIOUS, version: from, moveKey });
    }
    return { from, to: input.version };
  });
}

/** What a rollback of production would do. */
interface RollbackPlan {
  from: number;
  to: number;
  /** What `previous` points at afterwards (null: removed). */
  previous: number | null;
}

/** Plans a rollback, or throws the refusal naming the model (and version). */
async function planRollback(
  db: Queryable,
  model: string,
  toVersion: number | undefined,
): Promise<RollbackPlan> {
  if (toVersion === undefined) await requireModel(db, model);
  else await requireVersion(db, model, toVersion);
  const aliases = await getAliases(db, model);
  const from = aliases[PRODUCTION];
  if (from === undefined) {
    throw new RegistryRefusal(
      'conflict',
      `model "${model}" has no production version to roll back from`,
    );
  }
  const to = toVersion ?? aliases[PREVIOUS];
  if (to === undefined) {
    throw new RegistryRefusal(
      'not_found',
      `model "${model}" has nothing to roll back to: no "previous" alias` +
        ` (production is version ${from}; name a version to return to)`,
    );
  }
  if (to === from) {
    throw new RegistryRefusal(
      'conflict',
      `version ${to} of model "${model}" is already production`,
    );
  }
  const before = await db.query<{ from_version: number | null }>(
    `select from_version from model_alias_history
      where model = $1 and alias = $2 and kind = 'promote' and to_version = $3
        and from_version is distinct from to_version
      order by id desc limit 1`,
    [model, PRODUCTION, to],
  );
  const previous = before.rows[0]?.from_version ?? null;
  return { from, to, previous: previous === from ? null : previous };
}

/** Why a rollback would be refused right now, or undefined when it would go ahead (a pre-check). */
export async function rollbackRefusal(
  db: Queryable,
  model: string,
  toVersion?: number,
): Promise<RegistryRefusal | undefined> {
  try {
    await planRollback(db, model, toVersion);
    return undefined;
  } catch (err) {
    if (err instanceof RegistryRefusal) return err;
    throw err;
  }
}

/**
 * production := toVersion ?? the `previous` alias; previous := the version production pointed at
 * before that one (from history) or removed; idempotent by moveKey; refuses when there is nothing
 * to roll back to, naming the model.
 */
export async function rollbackProduction(
  pool: Pool,
  r: {
    model: string;
    toVersion?: number;
    actor: string;
    reason: string;
    workflowId: string | null;
    moveKey: string;
  },
): Promise<{ from: number | null; to: number }> {
  const input = parsed(rollbackSchema, r, 'rollback');
  return withTransaction(pool, async (client) => {
    await lockModel(client, input.model);
    const done = await recorded(client, input.moveKey, input.model, PRODUCTION);
    if (done) return productionMove(done);
    const plan = await planRollback(client, input.model, input.toVersion);
    const move = { ...input, kind: 'rollback' as const };
    await applyMove(client, { ...move, alias: PRODUCTION, version: plan.to });
    const current = (await getAliases(client, input.model))[PREVIOUS] ?? null;
    if (current !== plan.previous) {
      const moveKey = `${input.moveKey}/${PREVIOUS}`;
      await applyMove(client, { ...move, alias: PREVIOUS, version: plan.previous, moveKey });
    }
    return { from: plan.from, to: plan.to };
  });
}

/** The aliases of a model: name → version. */
export async function getAliases(db: Queryable, model: string): Promise<Record<string, number>> {
  const result = await db.query<{ alias: string; version: number }>(
    'select alias, version from model_aliases where model = $1 order by alias',
    [model],
  );
  return Object.fromEntries(result.rows.map((r) => [r.alias, r.version]));
}

/** The alias moves of a model, newest first (the latest 100 unless `limit` says otherwise). */
export async function aliasHistory(
  db: Queryable,
  model: string,
  limit = 100,
): Promise<AliasMove[]> {
  const result = await db.query<HistoryRow>(
    'select * from model_alias_history where model = $1 order by id desc limit $2',
    [model, limit],
  );
  return result.rows.map(fromRow);
}

/** Stores a version's validation report and verdict; writing the same again changes nothing. */
export async function recordValidation(
  db: Queryable,
  v: { model: string; version: number; validation: unknown; blessed: boolean },
): Promise<void> {
  const updated = await db.query(
    `update model_versions set validation = $3::jsonb, blessed = $4
      where model = $1 and version = $2`,
    [v.model, v.version, v.validation == null ? null : JSON.stringify(v.validation), v.blessed],
  );
  if ((updated.rowCount ?? 0) === 0) {
    throw new RegistryRefusal('not_found', `model "${v.model}" has no version ${v.version}`);
  }
}
