/** API tokens for tests: a live token of a role, created in the test's own database. */
import type { Queryable } from '../common/db.js';
import { createToken, type Role } from '../domain/privacy/tokens.js';

/** Creates a token of `role` and returns it (for `authorization: Bearer <token>`). */
export async function apiToken(db: Queryable, role: Role, name = `test-${role}`): Promise<string> {
  return (await createToken(db, { role, name, createdBy: 'test' })).token;
}

/** Headers that authenticate as `token`, merged with `headers`. */
export function withToken(token: string, headers: Record<string, string> = {}) {
  return { ...headers, authorization: `Bearer ${token}` };
}
