/**
 * The keys of PII minimization: the HMAC key that hashes identifiers (tombstones, request ids, the
 * stored form of emails and phones), and the AES-256-GCM field keys that seal the addresses
 * campaigns send to. Each comes from the environment or else from a file in the state dir,
 * created (mode 0600) on first use:
 * - POPS_PII_HMAC_KEY (64 hex characters) or `<state dir>/keys/pii-hmac.key`;
 * - POPS_FIELD_KEYS (`id:<64 hex>,id:<64 hex>`, the first seals, all open) or
 *   `<state dir>/keys/field-keys.json` (`{"current": id, "keys": {id: hex}}`); rotating adds a key
 *   and makes it current (`pops privacy rotate-key`), old keys keep opening what they sealed;
 * - POPS_UNSUBSCRIBE_SECRET (16 characters or more) or `<state dir>/keys/unsubscribe.key`, the
 *   secret that signs unsubscribe links (domain/campaigns/unsubscribe.ts).
 * Every process of one deployment must see the same keys (same state dir, or the same variables).
 */
import { createHmac, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig, stateDir } from '../../common/config.js';

const HEX_KEY = /^[0-9a-f]{64}$/;
const KEY_ID = /^[a-z0-9]{1,16}$/;

export interface FieldKeys {
  current: string;
  keys: Map<string, Buffer>;
}

let hmacKey: Buffer | undefined;
let fieldKeys: FieldKeys | undefined;

function keysDir(): string {
  return path.join(stateDir(loadConfig()), 'keys');
}

/** Reads a file, or creates it with `make()` when missing (another process may win the race). */
function readOrCreate(file: string, make: () => string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  // Only the keys folder is private: the state folder above it must let the embedded PostgreSQL's
  // own user through to its data folder (created 700 here, a later first start of it failed).
  fs.mkdirSync(path.dirname(path.dirname(file)), { recursive: true });
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  try {
    fs.writeFileSync(file, make(), { flag: 'wx', mode: 0o600 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  return fs.readFileSync(file, 'utf8');
}

/** The HMAC key of identifiers. */
export function piiHmacKey(): Buffer {
  if (hmacKey) return hmacKey;
  const fromEnv = process.env['POPS_PII_HMAC_KEY']?.trim();
  const text = fromEnv || readOrCreate(path.join(keysDir(), 'pii-hmac.key'), newHexKey).trim();
  if (!HEX_KEY.test(text)) {
    throw new Error(
      fromEnv
        ? 'POPS_PII_HMAC_KEY: must be 64 lowercase hex characters (32 bytes)'
        : `the key file ${path.join(keysDir(), 'pii-hmac.key')} does not hold 64 hex characters`,
    );
  }
  hmacKey = Buffer.from(text, 'hex');
  return hmacKey;
}

function newHexKey(): string {
  return `${randomBytes(32).toString('hex')}\n`;
}

/** The keyed hash (HMAC-SHA256, hex) of a text. */
export function keyedHash(text: string): string {
  return createHmac('sha256', piiHmacKey()).update(text).digest('hex');
}

/** How a hashed identifier value is stored: `h1:` and 64 hex characters. */
export const HASHED_VALUE = /^h1:[0-9a-f]{64}$/;

/**
 * The keyed hash of an identifier (type and value, NUL-separated). A value already stored in its
 * hashed form (`h1:<hash>`, emails and phones) is that hash: the hash of its clear value.
 */
export function identifierHash(identifier: { type: string; value: string }): string {
  if (HASHED_VALUE.test(identifier.value)) return identifier.value.slice(3);
  return keyedHash(`${identifier.type}\u0000${identifier.value}`);
}

/**
 * The stored form of a personal identifier value (an email or a phone number, normalized): `h1:`
 * and the keyed hash of its type and value. Matching compares these; the clear value is kept
 * nowhere (an address campaigns send to is sealed in `contacts` instead).
 */
export function hashedValue(type: string, normalized: string): string {
  return `h1:${keyedHash(`${type}\u0000${normalized}`)}`;
}

function parseFieldKeys(entries: Array<[string, string]>, where: string): FieldKeys {
  const keys = new Map<string, Buffer>();
  for (const [id, hex] of entries) {
    if (!KEY_ID.test(id) || !HEX_KEY.test(hex)) {
      throw new Error(`${where}: key "${id}": ids are 1-16 of a-z0-9, keys 64 hex characters`);
    }
    keys.set(id, Buffer.from(hex, 'hex'));
  }
  const current = entries[0]?.[0];
  if (current === undefined) throw new Error(`${where}: holds no key`);
  return { current, keys };
}

function fieldKeysFile(): string {
  return path.join(keysDir(), 'field-keys.json');
}

/** The field keys (the current one seals; every one opens what it sealed). */
export function loadFieldKeys(): FieldKeys {
  if (fieldKeys) return fieldKeys;
  const fromEnv = process.env['POPS_FIELD_KEYS']?.trim();
  if (fromEnv) {
    const entries = fromEnv.split(',').map((pair): [string, string] => {
      const [id = '', hex = ''] = pair.trim().split(':');
      return [id, hex];
    });
    fieldKeys = parseFieldKeys(entries, 'POPS_FIELD_KEYS');
    return fieldKeys;
  }
  const file = fieldKeysFile();
  const text = readOrCreate(file, () =>
    JSON.stringify({ current: 'k1', keys: { k1: newHexKey().trim() } }, null, 2),
  );
  const json = JSON.parse(text) as { current?: string; keys?: Record<string, string> };
  const entries = Object.entries(json.keys ?? {});
  // The current key first.
  entries.sort(([a], [b]) => Number(b === json.current) - Number(a === json.current));
  fieldKeys = parseFieldKeys(entries, file);
  return fieldKeys;
}

/**
 * The field key of an id. An id this process has not loaded is looked for again in the key file:
 * `pops privacy rotate-key` in another process adds keys there, and `reseal` then seals rows with
 * the new one, which a running server must still open.
 */
export function fieldKey(id: string): Buffer | undefined {
  const known = loadFieldKeys().keys.get(id);
  if (known || process.env['POPS_FIELD_KEYS']?.trim()) return known;
  fieldKeys = undefined;
  return loadFieldKeys().keys.get(id);
}

/**
 * Adds a new field key to the key file and makes it current; returns its id. Refused when the
 * keys come from POPS_FIELD_KEYS (rotate there: put a new key first). Processes that already
 * loaded the keys seal with the old one until they restart (and open the new one's at once).
 */
export function rotateFieldKey(): string {
  if (process.env['POPS_FIELD_KEYS']?.trim()) {
    throw new Error('POPS_FIELD_KEYS is set: rotate by putting a new id:key first in it');
  }
  const now = loadFieldKeys();
  const ids = [...now.keys.keys()];
  let n = ids.length + 1;
  while (now.keys.has(`k${n}`)) n += 1;
  const id = `k${n}`;
  const keys = Object.fromEntries([...now.keys].map(([k, v]) => [k, v.toString('hex')]));
  keys[id] = newHexKey().trim();
  const file = fieldKeysFile();
  const temp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(temp, JSON.stringify({ current: id, keys }, null, 2), { mode: 0o600 });
  fs.renameSync(temp, file);
  fieldKeys = undefined;
  return id;
}

/**
 * The secret unsubscribe tokens are signed with: POPS_UNSUBSCRIBE_SECRET, else a random one kept
 * in the state dir. There is no built-in default: a secret shared by every installation would let
 * anyone sign a token, and the unsubscribe route takes the token as its only credential.
 */
export function unsubscribeSecret(): string {
  const fromEnv = loadConfig().POPS_UNSUBSCRIBE_SECRET;
  if (fromEnv) return fromEnv;
  const file = path.join(keysDir(), 'unsubscribe.key');
  const text = readOrCreate(file, newHexKey).trim();
  if (!HEX_KEY.test(text)) {
    throw new Error(`the key file ${file} does not hold 64 hex characters`);
  }
  return text;
}

/** Forgets loaded keys (tests that change the variables). */
export function forgetKeys(): void {
  hmacKey = undefined;
  fieldKeys = undefined;
}
