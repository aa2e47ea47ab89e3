/**
 * Every table that holds data about a person, and how its rows of one person are found. Export
 * and deletion (domain/privacy/subject.ts) walk this list, so a table that holds a person key, a
 * person id, an identifier or an address and is missing here is a table a deletion leaves behind:
 * each new table of person data adds its line (test/privacy-delete.test.ts scans every table after
 * a deletion and fails on what is left).
 *
 * How a column names the person:
 * - `person_id`: a `persons.id` (bigint), merged or canonical;
 * - `person_key`: a person key as the feature store spells it (canonical id as text, or
 *   `unresolved:<raw id>`), or the raw id where the person was never resolved;
 * - `entity_key`: a feature store entity: a person key, or `<person key>|<item id>`;
 * - `raw_id`: a user or anonymous id as the sender sent it (events, quarantine);
 * - `identifier`: an identifier's type and value (two columns, `column` and `valueColumn`);
 * - `event_id`: an `events.id` of one of the person's events;
 * - `message_id`: an `events.message_id` of one of the person's messages;
 * - `decision_id`: an `exposures.decision_id` of one of the person's decisions;
 * - `identifier_hash`: a text[] of identifier keyed hashes (domain/privacy/keys.ts), any shared.
 */

export type PersonKeying =
  | 'person_id'
  | 'person_key'
  | 'entity_key'
  | 'raw_id'
  | 'identifier'
  | 'event_id'
  | 'message_id'
  | 'decision_id'
  | 'identifier_hash';

export interface PersonColumn {
  column: string;
  by: PersonKeying;
  /** For `identifier`: the column of the value (`column` is the type). */
  valueColumn?: string;
}

export interface PersonTable {
  table: string;
  /** Which columns find the person's rows; a row matching any of them is the person's. */
  columns: readonly PersonColumn[];
  /**
   * What a deletion does: `delete` the rows; `keep` rows that hold no personal data once the rest
   * is gone (say why in `note`).
   */
  deletion: 'delete' | 'keep';
  /** The export section the rows go in. */
  section: string;
  /** False: not part of an export bundle (earlier bundles). */
  exported?: false;
  /**
   * The rows are computed from other person tables by writers holding the feature write lock
   * (domain/features/write-lock.ts), and the table's deletion step waits for them: `features` the
   * feature store's tables, `training` the point-in-time rows and examples of training and drift
   * sets (built from events and feature snapshots).
   */
  derived?: 'features' | 'training';
  note?: string;
}

const c = (column: string, by: PersonKeying, valueColumn?: string): PersonColumn =>
  valueColumn === undefined ? { column, by } : { column, by, valueColumn };

/** The feature store's tables, in the order each is computed from the one before. */
const FEATURE_TABLES = [
  'feature_tiles',
  'feature_values',
  'feature_online',
  'feature_consistency_mismatches',
] as const;

/** A feature table: rows keyed by entity, derived from the person's events. */
const featureTable = (table: string): PersonTable => ({
  table,
  columns: [c('entity_id', 'entity_key')],
  deletion: 'delete',
  section: 'features',
  derived: 'features',
});

/**
 * In deletion order: rows that reference others first (outcomes before exposures, event_persons
 * before events, identifiers before persons); rows computed from others last, after their
 * sources and in the order they are computed (feature tiles from events, snapshots from tiles,
 * the online store from snapshots, mismatches from the online store): a materialization running
 * between two steps then finds nothing of the person to compute them from again.
 */
export const PERSON_TABLES: readonly PersonTable[] = [
  {
    table: 'privacy_exports',
    columns: [c('identifier_hashes', 'identifier_hash')],
    deletion: 'delete',
    section: 'exports',
    exported: false,
  },
  {
    table: 'outcomes',
    columns: [c('decision_id', 'decision_id')],
    deletion: 'delete',
    section: 'decisions',
  },
  {
    table: 'exposures',
    columns: [c('person_id', 'person_key')],
    deletion: 'delete',
    section: 'decisions',
  },
  {
    table: 'consent_events',
    columns: [c('identifier_type', 'identifier', 'identifier_value')],
    deletion: 'delete',
    section: 'consents',
  },
  {
    table: 'contacts',
    columns: [c('person_key', 'person_key')],
    deletion: 'delete',
    section: 'contacts',
  },
  // Campaigns (migration 0016): the ledger, audience snapshots, cap slots, suppressions and
  // notice audiences hold person keys, never addresses.
  ...['campaign_sends', 'campaign_audience', 'campaign_cap_slots', 'campaign_suppressions'].map(
    (table): PersonTable => ({
      table,
      columns: [c('person_key', 'person_key')],
      deletion: 'delete',
      section: 'campaigns',
    }),
  ),
  {
    table: 'notice_audiences',
    columns: [c('person_key', 'person_key')],
    deletion: 'delete',
    section: 'campaigns',
  },
  // Incidents (migrations 0017, 0020): the persons a playbook found in scope (the DPO export is
  // read from these rows; the other incident tables hold counts, never a person).
  {
    table: 'incident_scope',
    columns: [c('person_key', 'person_key')],
    deletion: 'delete',
    section: 'incidents',
  },
  {
    table: 'quarantined_events',
    columns: [
      c('message_id', 'message_id'),
      c("message->>'userId'", 'raw_id'),
      c("message->>'anonymousId'", 'raw_id'),
    ],
    deletion: 'delete',
    section: 'events',
  },
  {
    table: 'identity_conflicts',
    columns: [
      c('identifier_type', 'identifier', 'identifier_value'),
      c('identifier_person_id', 'person_id'),
      c('attributed_person_id', 'person_id'),
      c('event_id', 'event_id'),
    ],
    deletion: 'delete',
    section: 'identity',
  },
  {
    table: 'identity_unmerges',
    columns: [
      c('from_node', 'person_id'),
      c('into_node', 'person_id'),
      c('canonical_before', 'person_id'),
      c('kept_person', 'person_id'),
      c('split_person', 'person_id'),
    ],
    deletion: 'delete',
    section: 'identity',
  },
  {
    table: 'identity_merges',
    columns: [
      c('merged_from', 'person_id'),
      c('merged_into', 'person_id'),
      c('event_id', 'event_id'),
    ],
    deletion: 'delete',
    section: 'identity',
  },
  {
    table: 'event_persons',
    columns: [c('person_id', 'person_id'), c('event_id', 'event_id')],
    deletion: 'delete',
    section: 'identity',
  },
  {
    table: 'events',
    columns: [
      c('id', 'event_id'),
      c('person_id', 'raw_id'),
      c('user_id', 'raw_id'),
      c('anonymous_id', 'raw_id'),
    ],
    deletion: 'delete',
    section: 'events',
  },
  {
    table: 'identifiers',
    columns: [c('type', 'identifier', 'value'), c('person_id', 'person_id')],
    deletion: 'delete',
    section: 'identifiers',
  },
  { table: 'persons', columns: [c('id', 'person_id')], deletion: 'delete', section: 'profile' },
  // Computed from the rows above (events, and any table a SQL-sourced feature reads): after them,
  // each after the table it is computed from (see the order's comment).
  ...FEATURE_TABLES.map(featureTable),
  // Training and drift sets: point-in-time rows from events and feature snapshots, training
  // examples from those rows and events.
  {
    // row_id is the label row's event (ratedLabelsSql, the labels of every set pops builds): it
    // finds rows whose person key was the person's canonical key before an unmerge.
    table: 'pit_set_rows',
    columns: [c('person_key', 'person_key'), c('row_id', 'event_id')],
    deletion: 'delete',
    section: 'training',
    derived: 'training',
  },
  {
    table: 'training_examples',
    columns: [c('person_id', 'person_key'), c('event_id', 'event_id')],
    deletion: 'delete',
    section: 'training',
    derived: 'training',
  },
];

/**
 * The derived tables a deletion's table list (as its workflow recorded it) names before `events`,
 * in the order of PERSON_TABLES: a deletion started by a version that deleted them first deletes
 * them again once its sources are gone (workflows/deletePersonData.ts). [] for a list in the
 * current order.
 */
export function derivedBeforeEvents(
  order: readonly string[],
  derived: 'features' | 'training' = 'features',
): string[] {
  const events = order.indexOf('events');
  if (events < 0) return [];
  const early = new Set(order.slice(0, events));
  return PERSON_TABLES.filter((t) => t.derived === derived && early.has(t.table)).map(
    (t) => t.table,
  );
}
