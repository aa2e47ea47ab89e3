/** `pops write-keys create|list|revoke`: the Segment write keys of the HTTP ingestion endpoints. */
import {
  createWriteKey,
  listWriteKeys,
  revokeWriteKey,
  sourceNameSchema,
  writeKeyPrefixSchema,
} from '../ingest/write-keys.js';
import { parseArgs, print, table, UsageError } from './output.js';
import { openDatabase } from './runtime.js';

/** `pops write-keys create --source S`: prints the new key, the only time it is shown. */
export async function createWriteKeyCommand(options: { source: string; json?: boolean }) {
  const source = parseArgs(sourceNameSchema, options.source);
  const rt = await openDatabase();
  try {
    const created = await createWriteKey(rt.pool, source, rt.config.POPS_ACTOR);
    print(Boolean(options.json), created, () =>
      [
        `write key ${created.prefix}… for source "${source}" (audited):`,
        `  ${created.key}`,
        'it is shown only now: pops keeps its sha256, not the key.',
        `send it as the Basic auth username with an empty password, e.g. curl -u '${created.key}:'`,
      ].join('\n'),
    );
  } finally {
    await rt.close();
  }
}

/** `pops write-keys list`: prefixes, sources and state; never a key. */
export async function listWriteKeysCommand(options: { json?: boolean }) {
  const rt = await openDatabase();
  try {
    const keys = await listWriteKeys(rt.pool);
    print(Boolean(options.json), { writeKeys: keys }, () =>
      keys.length === 0
        ? 'no write keys (pops write-keys create --source <source>)'
        : table(
            ['prefix', 'source', 'created', 'by', 'state'],
            keys.map((k) => [
              k.prefix,
              k.source,
              k.createdAt.slice(0, 19),
              k.createdBy,
              k.revokedAt
                ? `revoked ${k.revokedAt.slice(0, 19)} by ${k.revokedBy ?? '?'}`
                : 'active',
            ]),
          ),
    );
  } finally {
    await rt.close();
  }
}

/** `pops write-keys revoke <prefix>`: requests with that key are refused from now on. */
export async function revokeWriteKeyCommand(prefix: string, options: { json?: boolean }) {
  const wanted = parseArgs(writeKeyPrefixSchema, prefix);
  const rt = await openDatabase();
  try {
    const revoked = await revokeWriteKey(rt.pool, wanted, rt.config.POPS_ACTOR);
    if (!revoked) {
      throw new UsageError(`no write key with prefix "${wanted}" (pops write-keys list)`);
    }
    print(Boolean(options.json), revoked, () =>
      revoked.alreadyRevoked
        ? `write key ${wanted}… was already revoked (at ${revoked.revokedAt ?? '?'})`
        : `revoked write key ${wanted}… of source "${revoked.source}" (audited)`,
    );
  } finally {
    await rt.close();
  }
}
