/**
 * Who may call what: the one table of every API route (method and path as Fastify registers it)
 * to the roles allowed to call it, and of every CLI command to the roles it needs. The
 * authentication hook (api/auth.ts) enforces the route table: a route missing from it is refused
 * to everyone (deny by default), and test/auth-routes.test.ts walks every registered route with
 * every role against it. `admin` may call everything.
 *
 * The roles:
 * - admin: everything, including tokens, privacy requests and consent defaults;
 * - mlops: models, retrains, drift, features, surfaces, rollouts, identity;
 * - marketer: campaigns, consent, surfaces (read);
 * - responder: incidents: rollbacks, surface modes, rollout pause/abort, playbooks, reads;
 * - auditor: reads of what happened (no personal data), the audit log;
 * - ingest: the application's service token: decisions, outcomes, consent capture.
 * Segment ingestion authenticates with its write key and unsubscribe with its signed token: both
 * are `public` here (no API token), their own check is in their route.
 */

import { ROLES, type Role } from '../domain/privacy/tokens.js';

export { ROLES, type Role };

/**
 * A route no token guards: `healthz`, or authenticated by its own `write-key` or `signed-token`.
 */
export interface PublicRoute {
  public: 'healthz' | 'write-key' | 'signed-token';
}
export type RouteAccess = PublicRoute | readonly Role[];

const READERS: readonly Role[] = ['mlops', 'responder', 'auditor'];
const MLOPS: readonly Role[] = ['mlops'];
const RESPOND: readonly Role[] = ['mlops', 'responder'];
const WRITE_KEY: PublicRoute = { public: 'write-key' };

/** Route (`METHOD /path` as registered) → who may call it. Admin is implied everywhere. */
export const ROUTE_ROLES: Readonly<Record<string, RouteAccess>> = {
  'GET /healthz': { public: 'healthz' },
  // Segment ingestion (its write key).
  'POST /v1/batch': WRITE_KEY,
  'POST /v1/track': WRITE_KEY,
  'POST /v1/identify': WRITE_KEY,
  'POST /v1/alias': WRITE_KEY,
  'POST /v1/page': WRITE_KEY,
  // Unsubscribe links (their signed token; route of the campaigns issue).
  'POST /v1/unsubscribe/:token': { public: 'signed-token' },
  'GET /v1/unsubscribe/:token': { public: 'signed-token' },
  // Decisions.
  'POST /v1/decide': ['mlops', 'ingest'],
  'POST /v1/outcomes': ['mlops', 'ingest'],
  'POST /v1/surfaces': MLOPS,
  'GET /v1/surfaces': [...READERS, 'marketer'],
  'GET /v1/surfaces/:name': [...READERS, 'marketer'],
  'PUT /v1/surfaces/:name/mode': RESPOND,
  'PUT /v1/surfaces/:name/filters': RESPOND,
  // Models, retrains, drift.
  'POST /v1/retrains': MLOPS,
  'GET /v1/workflows/*': READERS,
  'GET /v1/models': READERS,
  'POST /v1/models': MLOPS,
  'GET /v1/models/:name': READERS,
  'GET /v1/models/:name/versions': READERS,
  'GET /v1/models/:name/versions/:version': READERS,
  'POST /v1/models/:name/rollback': RESPOND,
  'PUT /v1/models/:name/aliases/:alias': MLOPS,
  'POST /v1/models/:model/approve': MLOPS,
  'POST /v1/models/:model/reject': MLOPS,
  'GET /v1/drift/:model': READERS,
  'PUT /v1/drift/:model': MLOPS,
  'POST /v1/drift/:model/runs': MLOPS,
  'GET /v1/drift/:model/runs': READERS,
  'GET /v1/drift/:model/runs/:id': READERS,
  // Rollouts.
  'POST /v1/rollouts': MLOPS,
  'GET /v1/rollouts/:surface': READERS,
  'POST /v1/rollouts/:surface/pause': RESPOND,
  'POST /v1/rollouts/:surface/resume': RESPOND,
  'POST /v1/rollouts/:surface/approve': MLOPS,
  'POST /v1/rollouts/:surface/abort': RESPOND,
  // Features and identity hold personal data: not the auditor's.
  'GET /v1/features/:entity/:id': MLOPS,
  'POST /v1/identity/merges': MLOPS,
  'GET /v1/identity/persons/:personId': MLOPS,
  'GET /v1/identity/identifiers/:type/:value': MLOPS,
  'POST /v1/identity/unmerges': MLOPS,
  'POST /v1/identity/remerges': MLOPS,
  // Campaigns (marketer's; a responder may stop one).
  'GET /v1/campaigns': ['marketer', 'responder', 'auditor'],
  'PUT /v1/campaigns/:name': ['marketer'],
  'GET /v1/campaigns/:name': ['marketer', 'responder', 'auditor'],
  'POST /v1/campaigns/:name/pause': ['marketer', 'responder'],
  'POST /v1/campaigns/:name/resume': ['marketer', 'responder'],
  'POST /v1/campaigns/:name/trigger': ['marketer'],
  'POST /v1/campaigns/:name/backfill': ['marketer'],
  'POST /v1/campaigns/:name/preview': ['marketer'],
  'POST /v1/campaigns/:name/test-send': ['marketer'],
  'GET /v1/campaigns/:name/reports': ['marketer', 'auditor'],
  'POST /v1/campaigns/:name/lift': ['marketer'],
  // Playbooks and incidents (responder's).
  'GET /v1/playbooks': READERS,
  'POST /v1/playbooks': ['responder'],
  'POST /v1/playbooks/:name/plan': RESPOND,
  'POST /v1/playbooks/:name/runs': RESPOND,
  'GET /v1/incidents': READERS,
  'GET /v1/incidents/:id': READERS,
  'POST /v1/incidents/:id/approve': RESPOND,
  'POST /v1/incidents/:id/reject': RESPOND,
  'POST /v1/incidents/:id/abort': RESPOND,
  // The affected list holds person keys: not the auditor's.
  'GET /v1/incidents/:id/export': ['responder'],
  // Consent and privacy requests.
  'PUT /v1/consent': ['marketer', 'ingest'],
  'GET /v1/consent': ['marketer'],
  'GET /v1/consent-defaults': ['marketer', 'auditor'],
  'PUT /v1/consent-defaults/:purpose': [],
  'POST /v1/privacy/deletions': [],
  'POST /v1/privacy/exports': [],
  'GET /v1/privacy/requests/:id': ['auditor'],
  'GET /v1/privacy/exports/:id': [],
  'GET /v1/audit/checkpoint': ['auditor'],
  'GET /v1/audit': ['auditor'],
};

/** The access of a route, or undefined when the table does not name it (then: refused). */
export function routeAccess(method: string, url: string): RouteAccess | undefined {
  const verb = method === 'HEAD' ? 'GET' : method;
  return ROUTE_ROLES[`${verb} ${url}`];
}

/** Whether the access is public (no API token). */
export function isPublic(access: RouteAccess): access is PublicRoute {
  return !Array.isArray(access);
}

/** Whether a role may call a route with this access (admin may call every guarded route). */
export function allows(access: RouteAccess, role: Role): boolean {
  if (isPublic(access)) return true;
  return role === 'admin' || (access as readonly Role[]).includes(role);
}

/**
 * CLI command (its words, as `pops <words>`) → the roles it needs. The CLI talks to PostgreSQL
 * and Temporal directly, so whoever holds their credentials can do everything: this table is
 * checked only when `POPS_TOKEN` names a token (a guard rail for shared operator machines), see
 * docs/privacy.md. A command is decided by its longest listed prefix (test/cli-roles.test.ts
 * checks that every command has one); admin may run everything.
 */
export const CLI_ROLES: Readonly<Record<string, readonly Role[]>> = {
  // Running pops itself: the server, the workers, the demo on the embedded defaults.
  serve: ['admin'],
  worker: ['admin'],
  demo: ['admin'],
  status: READERS,
  tokens: ['admin'],
  'tokens list': ['admin', 'auditor'],
  'write-keys': ['admin'],
  // Data, features, identity (personal data: not the auditor's).
  import: ['admin', 'mlops', 'ingest'],
  features: ['admin', ...MLOPS],
  backfill: ['admin', ...MLOPS],
  contracts: ['admin', ...MLOPS],
  quarantine: ['admin', ...MLOPS],
  identity: ['admin', ...MLOPS],
  simulate: ['admin', ...MLOPS],
  // Models, drift, rollouts, surfaces: as their routes.
  retrain: ['admin', ...MLOPS],
  models: ['admin', ...MLOPS],
  'models list': ['admin', ...READERS],
  'models show': ['admin', ...READERS],
  'models rollback': ['admin', ...RESPOND],
  drift: ['admin', ...MLOPS],
  'drift show': ['admin', ...READERS],
  'drift list': ['admin', ...READERS],
  rollout: ['admin', ...MLOPS],
  'rollout status': ['admin', ...READERS],
  'rollout pause': ['admin', ...RESPOND],
  'rollout resume': ['admin', ...RESPOND],
  'rollout abort': ['admin', ...RESPOND],
  surfaces: ['admin', ...MLOPS],
  'surfaces show': ['admin', ...READERS, 'marketer'],
  'surfaces mode': ['admin', ...RESPOND],
  'surfaces filters': ['admin', ...RESPOND],
  // Campaigns (marketer's; a responder may stop one).
  campaign: ['admin', 'marketer'],
  'campaign list': ['admin', 'marketer', 'responder', 'auditor'],
  'campaign show': ['admin', 'marketer', 'responder', 'auditor'],
  'campaign report': ['admin', 'marketer', 'auditor'],
  'campaign pause': ['admin', 'marketer', 'responder'],
  'campaign resume': ['admin', 'marketer', 'responder'],
  // Playbooks and incidents (responder's).
  playbook: ['admin', ...RESPOND],
  'playbook register': ['admin', 'responder'],
  'playbook list': ['admin', ...READERS],
  'playbook plan': ['admin', ...RESPOND],
  'playbook status': ['admin', ...READERS],
  incident: ['admin', ...READERS],
  // The affected list holds person keys: not the auditor's.
  'incident export': ['admin', 'responder'],
  // Consent: as its routes (the ingest role is the application's, which captures choices).
  consent: ['admin', 'marketer'],
  'consent set': ['admin', 'marketer', 'ingest'],
  'consent defaults': ['admin', 'marketer', 'auditor'],
  'consent set-default': ['admin'],
  // Privacy and the audit trail.
  privacy: ['admin'],
  audit: ['admin', 'auditor'],
};
