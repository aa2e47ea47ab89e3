/**
 * Helpers of the privacy tests: a person's messages over the Segment API, and the scan of every
 * column of every table for what a deletion must have removed.
 */
import type { Queryable } from '../common/db.js';

/** Posts a Segment batch with a write key; throws unless it was accepted. */
export async function postBatch(base: string, writeKey: string, batch: unknown[]): Promise<void> {
  const response = await fetch(`${base}/v1/batch`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      authorization: `Basic ${Buffer.from(`${writeKey}:`).toString('base64')}`,
    },
    body: JSON.stringify({ batch }),
  });
  if (response.status !== 200) {
    throw new Error(`batch answered ${response.status}: ${await response.text()}`);
  }
}

/**
 * The messages of one person: identify, two ratings, an alias joining a second anonymous id, a
 * page.
 */
export function personMessages(p: {
  tag: string;
  user: string;
  anon: string;
  anon2: string;
  email: string;
}): unknown[] {
  const at = (minute: number) => new Date(Date.UTC(2026, 0, 5, 10, minute)).toISOString();
  return [
    {
      type: 'identify',
      messageId: `${p.tag}-1`,
      userId: p.user,
      anonymousId: p.anon,
      timestamp: at(1),
      traits: { email: p.email, name: `Name ${p.tag}`, consent: { marketing: true } },
    },
    {
      type: 'track',
      messageId: `${p.tag}-2`,
      anonymousId: p.anon2,
      event: 'rated',
      timestamp: at(2),
      properties: { item_id: 'i1', rating: 5 },
    },
    {
      type: 'alias',
      messageId: `${p.tag}-3`,
      previousId: p.anon2,
      userId: p.user,
      timestamp: at(3),
    },
    {
      type: 'track',
      messageId: `${p.tag}-4`,
      userId: p.user,
      event: 'rated',
      timestamp: at(4),
      properties: { item_id: 'i2', rating: 2 },
      context: { traits: { email: p.email } },
    },
    { type: 'page', messageId: `${p.tag}-5`, anonymousId: p.anon, name: 'home', timestamp: at(5) },
  ];
}

export interface Hit {
  table: string;
  column: string;
  rows: number;
}

/**
 * Every text, json, bigint and array column of every table of the schema, searched for the
 * needles (case-insensitive substrings) and, in bigint columns and as whole numbers in text and
 * JSON, for the ids. Returns where anything was found.
 */
export async function scanEveryTable(
  db: Queryable,
  needles: readonly string[],
  ids: readonly number[],
): Promise<Hit[]> {
  const { rows: columns } = await db.query<{ table: string; column: string; type: string }>(
    `select c.table_name as table, c.column_name as column, c.data_type as type
       from information_schema.columns c
       join information_schema.tables t
         on t.table_schema = c.table_schema and t.table_name = c.table_name
      where c.table_schema = current_schema() and t.table_type = 'BASE TABLE'
        and (c.data_type in ('text', 'character varying', 'json', 'jsonb', 'bigint', 'ARRAY'))
      order by 1, 2`,
  );
  const patterns = needles.map((n) => `%${n.toLowerCase()}%`);
  const numbers = ids.map((id) => `(^|[^0-9])${id}([^0-9]|$)`);
  const hits: Hit[] = [];
  for (const { table, column, type } of columns) {
    const col = `"${column}"`;
    const asText = type === 'ARRAY' ? `array_to_string(${col}, ' ')` : `${col}::text`;
    const [condition, values] =
      type === 'bigint'
        ? [`${col} = any($1::bigint[])`, [ids]]
        : [
            `lower(${asText}) like any($1::text[]) or ${asText} ~ any($2::text[])`,
            [patterns, numbers],
          ];
    const { rows } = await db.query<{ n: number }>(
      `select count(*)::int as n from "${table}" where ${condition}`,
      values,
    );
    const n = rows[0]?.n ?? 0;
    if (n > 0) hits.push({ table, column, rows: n });
  }
  return hits;
}
