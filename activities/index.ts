/**
 * The activity factory. Workflows import the `Activities` type only and call through
 * proxyActivities; workers register the set of each queue, built from real clients.
 */
import type { QueueKind } from '../common/queues.js';
import { auditActivities } from './audit.js';
import { campaignActivities, campaignSendActivities } from './campaigns.js';
import { driftActivities, driftReportActivities } from './drift.js';
import type { ActivityDeps } from './deps.js';
import { featureConsistencyActivities } from './feature-consistency.js';
import { featureActivities, materializationActivities } from './features.js';
import { identityActivities } from './identity.js';
import { identityEditActivities } from './identity-edits.js';
import { playbookActivities } from './playbooks.js';
import { privacyActivities } from './privacy.js';
import { registryActivities } from './registry.js';
import { rolloutActivities } from './rollout.js';
import { trainingActivities } from './training.js';
import { trainingSetActivities } from './training-set.js';
import { validationActivities, validationLookupActivities } from './validation.js';

/** Every activity, for typing workflows and for tests that register them all on one worker. */
export function createActivities(deps: ActivityDeps) {
  return {
    ...orchestrationActivities(deps),
    ...trainingQueueActivities(deps),
    ...ioQueueActivities(deps),
  };
}

/** Outbound calls: campaign mail over SMTP. */
function ioQueueActivities(deps: ActivityDeps) {
  return { ...campaignSendActivities(deps) };
}

function trainingQueueActivities(deps: ActivityDeps) {
  return {
    ...trainingActivities(deps),
    ...validationActivities(deps),
    ...driftReportActivities(deps),
  };
}

export type Activities = ReturnType<typeof createActivities>;

function orchestrationActivities(deps: ActivityDeps) {
  return {
    ...auditActivities(deps),
    ...trainingSetActivities(deps),
    ...registryActivities(deps),
    ...identityActivities(deps),
    ...identityEditActivities(deps),
    ...featureConsistencyActivities(deps),
    ...featureActivities(deps),
    ...materializationActivities(deps),
    ...driftActivities(deps),
    ...validationLookupActivities(deps),
    ...rolloutActivities(deps),
    ...campaignActivities(deps),
    ...playbookActivities(deps),
    ...privacyActivities(deps),
  };
}

/** The activities one queue's worker runs. */
export function activitiesFor(
  kind: QueueKind,
  deps: ActivityDeps,
): Record<string, (...args: never[]) => unknown> {
  switch (kind) {
    case 'orchestration':
      return orchestrationActivities(deps);
    case 'training':
      return trainingQueueActivities(deps);
    case 'io':
      return ioQueueActivities(deps);
  }
}
