/**
 * The contract registry in PostgreSQL. Registering is all or nothing and audited in the same
 * transaction. A (event, source, version) keeps its schema for ever: registering it again with
 * another schema is refused, naming the version to declare instead; owner and description may
 * change in place. Ingestion reads the active contracts of a source with one query per batch.
 */
import { createHash } from 'node:crypto';
import { canonicalJson } from '../../common/canonical-json.js';
import type { Pool, PoolClient, Queryable } from '../../common/db.js';
import { withTransaction } from '../../common/db.js';
import { InputError } from '../../common/failures.js';
import { appendAuditIn } from '../audit.js';
import {
  type ContractDefinition,
  type ContractSchema,
  schemaOf,
  sourceLabel,
} from './definition.js';

/** Thrown when a version would change its schema; nothing of that registration is written. */
export class ContractVersionConflict extends InputError {
  override name = 'ContractVersionConflict';
}

export type Registration = 'created' | 'updated' | 'unchanged';

/** What registering did to one contract. */
export interface RegistrationResult {
  event: string;
  source: string | null;
  version: number;
  registration: Registration;
}

// Registrations are serialized, so two of the same new version cannot both believe they created it.
const REGISTER_LOCK = 0x636f6e74; // 'cont'

/** The sha256 of the canonical JSON of a contract's schema. */
export function schemaSha256(c: ContractDefinition): string {
  return createHash('sha256')
    .update(canonicalJson(schemaOf(c)))
    .digest('hex');
}

/** Registers the contracts in one transaction; returns what happened to each, in order. */
export async function registerContracts(
  pool: Pool,
  contracts: readonly ContractDefinition[],
  actor: string,
): Promise<RegistrationResult[]> {
  return withTransaction(pool, async (client) => {
    await client.query('select pg_advisory_xact_lock($1::bigint)', [REGISTER_LOCK]);
    const out: RegistrationResult[] = [];
    for (const c of contracts) {
      const registration = await registerOne(client, c, actor);
      const { event, version } = c;
      out.push({ event, source: c.source ?? null, version, registration });
    }
    return out;
  });
}

async function registerOne(
  client: PoolClient,
  c: ContractDefinition,
  actor: string,
): Promise<Registration> {
  const sha = schemaSha256(c);
  const source = c.source ?? null;
  const subject = `contract/${c.event}/${sourceLabel(source)}/${c.version}`;
  const { rows } = await client.query<{
    id: number;
    schema_sha256: string;
    owner: string;
    description: string | null;
  }>(
    `select id, schema_sha256, owner, description from event_contracts
      where event = $1 and source is not distinct from $2::text and version = $3`,
    [c.event, source, c.version],
  );
  const existing = rows[0];
  if (existing && existing.schema_sha256 !== sha) {
    const next = await nextVersion(client, c.event, source);
    throw new ContractVersionConflict(
      `contract ${c.event} (source ${sourceLabel(source)}) version ${c.version} is registered` +
        ` with another schema; a changed schema needs a new version (declare version ${next})`,
    );
  }
  const description = c.description ?? null;
  if (existing && existing.owner === c.owner && existing.description === description) {
    return 'unchanged';
  }
  const id = existing
    ? await updateMetadata(client, existing.id, c.owner, description)
    : await insertContract(client, c, sha, actor);
  const registration: Registration = existing ? 'updated' : 'created';
  await appendAuditIn(client, {
    actor,
    action: `contract.${registration}`,
    subject,
    inputs: { contract: c },
    outputs: { id, schemaSha256: sha },
  });
  return registration;
}

async function insertContract(
  client: PoolClient,
  c: ContractDefinition,
  sha: string,
  actor: string,
): Promise<number> {
  const { rows } = await client.query<{ id: number }>(
    `insert into event_contracts (event, source, version, schema, schema_sha256, owner,
                                  description, registered_by)
     values ($1, $2, $3, $4::jsonb, $5, $6, $7, $8)
     returning id`,
    [
      c.event,
      c.source ?? null,
      c.version,
      JSON.stringify(schemaOf(c)),
      sha,
      c.owner,
      c.description ?? null,
      actor,
    ],
  );
  return rows[0]?.id ?? 0;
}

async function updateMetadata(
  client: PoolClient,
  id: number,
  owner: string,
  description: string | null,
): Promise<number> {
  await client.query(
    `update event_contracts set owner = $2, description = $3, updated_at = now() where id = $1`,
    [id, owner, description],
  );
  return id;
}

async function nextVersion(db: Queryable, event: string, source: string | null): Promise<number> {
  const { rows } = await db.query<{ next: number }>(
    `select coalesce(max(version), 0) + 1 as next from event_contracts
      where event = $1 and source is not distinct from $2::text`,
    [event, source],
  );
  return rows[0]?.next ?? 1;
}

/** The contract a message of an event is judged by. */
export interface ActiveContract {
  id: number;
  event: string;
  source: string | null;
  version: number;
  schema: ContractSchema;
}

/**
 * The contracts that judge messages written into `source`, by event: for each event, the highest
 * version declared for this source, or, when there is none, the highest declared for every
 * source. `events` narrows the query to those names (none: no query); one query either way.
 */
export async function activeContracts(
  db: Queryable,
  source: string,
  events?: readonly string[],
): Promise<Map<string, ActiveContract>> {
  if (events?.length === 0) return new Map();
  const { rows } = await db.query<ActiveContract>(
    `select distinct on (event) id, event, source, version, schema
       from event_contracts
      where (source = $1 or source is null) and ($2::text[] is null or event = any($2::text[]))
      order by event, source is null, version desc`,
    [source, events === undefined ? null : [...events]],
  );
  return new Map(rows.map((row) => [row.event, row]));
}

/** One contract as `pops contracts list` shows it: its latest version and what it quarantined. */
export interface ContractListing {
  event: string;
  source: string | null;
  latest: number;
  versions: number;
  owner: string;
  description: string | null;
  schema: ContractSchema;
  registeredAt: string;
  registeredBy: string;
  /** Messages quarantined under any version of this contract. */
  quarantined: number;
}

/** Every (event, source) with a contract, by event, the every-source contract first. */
export async function listContracts(db: Queryable): Promise<ContractListing[]> {
  const { rows } = await db.query<{
    event: string;
    source: string | null;
    latest: number;
    versions: number;
    owner: string;
    description: string | null;
    schema: ContractSchema;
    registered_at: Date;
    registered_by: string;
    quarantined: number;
  }>(
    `select distinct on (c.event, c.source) c.event, c.source, c.version as latest,
            count(*) over (partition by c.event, c.source)::int as versions, c.owner,
            c.description, c.schema, c.registered_at, c.registered_by,
            (select count(*)::int from quarantined_events q
               join event_contracts k on k.id = q.contract_id
              where k.event = c.event and k.source is not distinct from c.source) as quarantined
       from event_contracts c
      order by c.event, c.source nulls first, c.version desc`,
  );
  return rows.map((r) => ({
    event: r.event,
    source: r.source,
    latest: r.latest,
    versions: r.versions,
    owner: r.owner,
    description: r.description,
    schema: r.schema,
    registeredAt: r.registered_at.toISOString(),
    registeredBy: r.registered_by,
    quarantined: r.quarantined,
  }));
}
