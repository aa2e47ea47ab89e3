/**
 * Field encryption: AES-256-GCM with a 96-bit random IV, the key id stored with the ciphertext
 * (`v1.<key id>.<iv>.<ciphertext and tag>`, base64url), and additional data binding it to where it
 * is stored (a sealed address opens only under the person key it was sealed for). Keys come from
 * domain/privacy/keys.ts; the current key seals, any known key opens.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { fieldKey, loadFieldKeys } from './keys.js';

/** Thrown when a sealed value cannot be opened (unknown key, tampered, or other row's data). */
export class SealError extends Error {}

/** Seals `plain` for `context` with the current key; returns the text and the key id. */
export function seal(plain: string, context: string): { sealed: string; keyId: string } {
  const keys = loadFieldKeys();
  const key = keys.keys.get(keys.current);
  if (!key) throw new SealError(`the current field key ${keys.current} is missing`);
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(context, 'utf8'));
  const body = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final(), cipher.getAuthTag()]);
  const parts = ['v1', keys.current, iv.toString('base64url'), body.toString('base64url')];
  return { sealed: parts.join('.'), keyId: keys.current };
}

/** Opens a sealed value for `context`. */
export function open(sealed: string, context: string): string {
  const [version, keyId = '', ivText = '', bodyText = ''] = sealed.split('.');
  if (version !== 'v1') throw new SealError('not a v1 sealed value');
  const key = fieldKey(keyId);
  if (!key) {
    const where = process.env['POPS_FIELD_KEYS']?.trim() ? 'POPS_FIELD_KEYS' : 'the key file';
    throw new SealError(`field key ${keyId} is not in ${where} (removed, or another install's)`);
  }
  const body = Buffer.from(bodyText, 'base64url');
  if (body.length < 16) throw new SealError('sealed value is too short');
  const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(ivText, 'base64url'));
  decipher.setAAD(Buffer.from(context, 'utf8'));
  decipher.setAuthTag(body.subarray(body.length - 16));
  try {
    return Buffer.concat([
      decipher.update(body.subarray(0, body.length - 16)),
      decipher.final(),
    ]).toString('utf8');
  } catch {
    throw new SealError('sealed value does not open: tampered, or sealed for another row');
  }
}
