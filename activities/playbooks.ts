/**
 * The playbook activities: load a registered playbook, keep the incident and its timeline, and
 * the effects of the steps (domain/playbooks/effects.ts, verify.ts). Each is idempotent by a
 * natural key (entry key, change key, move key, effect key, incident and person); refusals become
 * non-retryable failures of their type.
 */
import { FAILURE_TYPES, failure } from '../common/failures.js';
import {
  liftSuppression,
  pauseCampaigns,
  resumeCampaigns,
  suppressPersons,
} from '../domain/campaigns/control.js';
import { SurfaceRefusal } from '../domain/decide/surfaces.js';
import { RegistryRefusal, rollbackProduction } from '../domain/registry.js';
import {
  deliver,
  type Delivered,
  type Delivery,
  featureQuality,
  type Rerouted,
  rerouteModel,
  restoreRoutes,
  runningRollouts,
  setModeKeyed,
  writeScope,
} from '../domain/playbooks/effects.js';
import type { Playbook } from '../domain/playbooks/definition.js';
import {
  appendTimeline,
  getPlaybook,
  type IncidentStatus,
  PlaybookRefusal,
  scopePersons,
  setIncidentStatus,
  storeExport,
  type TimelineEntry,
} from '../domain/playbooks/store.js';
import { verifyServing, type Verified } from '../domain/playbooks/verify.js';
import { type ActivityDeps, callerWorkflow } from './deps.js';

const REFUSALS = {
  validation: FAILURE_TYPES.validation,
  not_found: FAILURE_TYPES.notFound,
  conflict: FAILURE_TYPES.conflict,
} as const;

/** Runs `work`, turning a surface, registry or playbook refusal into a non-retryable failure. */
async function refusing<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    if (
      err instanceof SurfaceRefusal ||
      err instanceof RegistryRefusal ||
      err instanceof PlaybookRefusal
    ) {
      throw failure(REFUSALS[err.kind], err.message);
    }
    throw err;
  }
}

/** Who acts, why, and the key that makes the change happen once. */
export interface ActBy {
  actor: string;
  reason: string;
  key: string;
}

/** Builds the playbook activities. */
export function playbookActivities({ pool, log, temporal }: ActivityDeps) {
  const client = () => {
    if (!temporal) throw new Error('campaign controls need a Temporal client in the worker');
    return temporal;
  };
  return {
    /** The registered definition of a playbook version. */
    async playbookLoad(input: { name: string; version: number }): Promise<Playbook> {
      const found = await getPlaybook(pool, input.name, input.version);
      if (!found) {
        throw failure(
          FAILURE_TYPES.notFound,
          `playbook ${input.name} version ${input.version} is not registered`,
        );
      }
      return found.definition;
    },

    /** Appends timeline entries (a local activity; keyed `<runKey>/<seq>`). */
    async playbookRecord(input: {
      incident: string;
      runKey: string;
      entries: TimelineEntry[];
    }): Promise<void> {
      await appendTimeline(pool, input.incident, input.runKey, input.entries);
    },

    /** Sets the incident's status (and records the run id on the first call). */
    async playbookSetStatus(input: { incident: string; status: IncidentStatus }): Promise<void> {
      await setIncidentStatus(pool, input.incident, input.status, callerWorkflow().runId);
    },

    /** The running rollouts that freeze_rollouts pauses. */
    async playbookRunningRollouts(input: {
      surface?: string;
      model?: string;
    }): Promise<Array<{ surface: string; workflowId: string }>> {
      return runningRollouts(pool, input);
    },

    /** Routes every surface of the model to `version` alone (keyed per surface). */
    async playbookReroute(input: ActBy & { model: string; version: number }): Promise<Rerouted[]> {
      const { workflowId } = callerWorkflow();
      return refusing(() => rerouteModel(pool, { ...input, workflowId }));
    },

    /** Puts the routes of rerouted surfaces back (compensation). */
    async playbookRestoreRoutes(
      input: ActBy & { surfaces: Rerouted[] },
    ): Promise<Array<{ surface: string; generation: number }>> {
      const { workflowId } = callerWorkflow();
      return refusing(() => restoreRoutes(pool, { ...input, workflowId }));
    },

    /** Points production back at `version` (compensation of a rollback), keyed by moveKey. */
    async playbookRestoreProduction(
      input: ActBy & { model: string; version: number },
    ): Promise<{ from: number | null; to: number }> {
      const { workflowId } = callerWorkflow();
      return refusing(() =>
        rollbackProduction(pool, {
          model: input.model,
          toVersion: input.version,
          actor: input.actor,
          reason: input.reason,
          workflowId,
          moveKey: input.key,
        }),
      );
    },

    /** Sets a surface's mode (keyed), answering the mode before. */
    async playbookSetMode(input: ActBy & { surface: string; mode: string }) {
      const { workflowId } = callerWorkflow();
      return refusing(() => setModeKeyed(pool, { ...input, changeKey: input.key, workflowId }));
    },

    /** Writes the persons in scope and answers the counts. */
    async playbookScope(input: Parameters<typeof writeScope>[1]) {
      const counts = await writeScope(pool, input);
      log.info({ incident: input.incident, ...counts }, 'incident scope identified');
      return counts;
    },

    /** One outbound call through the ledger (webhooks, http steps). */
    async playbookDeliver(input: Delivery): Promise<Delivered> {
      const delivered = await deliver(pool, input);
      log.info(
        { effectKey: input.effectKey, status: delivered.status, replayed: delivered.replayed },
        'playbook call delivered',
      );
      return delivered;
    },

    /** Probe decisions through the decider: every one must come from `version`. */
    async playbookVerifyServing(input: {
      incident: string;
      surface?: string;
      model?: string;
      version: number;
      probes: number;
    }): Promise<{ version: number; surfaces: Verified[] }> {
      return verifyServing(pool, log, input);
    },

    /** Quality of features' partitions over a range; fails when a day failed or is missing. */
    async playbookCheckQuality(input: { features: string[]; from: string; to: string }) {
      const figures = await featureQuality(pool, input);
      const bad = figures.filter((f) => f.fail > 0 || f.missing > 0);
      if (bad.length > 0) {
        throw failure(
          FAILURE_TYPES.qualityCheck,
          `quality check failed over ${input.from}..${input.to}: ` +
            bad.map((f) => `${f.feature} ${f.fail} failed, ${f.missing} missing`).join('; '),
          { figures },
        );
      }
      return { features: figures };
    },

    /** Stores the scope's CSV for the DPO (once per incident and step). */
    async playbookExport(input: { incident: string; stepId: string }) {
      return storeExport(pool, input.incident, input.stepId);
    },

    /** The audience of a notice to the persons in scope (H8's notice_audiences, idempotent). */
    async playbookNoticeAudience(input: { incident: string; noticeId: string }): Promise<number> {
      const persons = await scopePersons(pool, input.incident);
      await pool.query(
        `insert into notice_audiences (notice_id, person_key)
         select $1, p from unnest($2::text[]) as p on conflict do nothing`,
        [input.noticeId, persons],
      );
      return persons.length;
    },

    /**
     * Pauses campaigns (the named ones, else all running) and suppresses the persons in scope
     * under the incident id. The names to pause are written to the ledger before they are paused,
     * so a retry pauses the same ones and the undo resumes exactly those.
     */
    async playbookStopCampaigns(
      input: ActBy & { incident: string; stepId: string; names?: string[]; suppressScope: boolean },
    ): Promise<{ paused: string[]; suppressed: number }> {
      const running = await pool.query<{ name: string }>(
        `select name from campaigns where not paused and ($1::text[] is null or name = any($1))
          order by name`,
        [input.names ?? null],
      );
      await pool.query(
        `insert into playbook_effects (effect_key, incident_id, step_id, kind, attempts, response)
         values ($1, $2, $3, 'stop_campaigns', 1, $4::jsonb) on conflict (effect_key) do nothing`,
        [
          input.key,
          input.incident,
          input.stepId,
          JSON.stringify({ names: running.rows.map((r) => r.name) }),
        ],
      );
      const ledger = await pool.query<{ response: { names: string[] } }>(
        'select response from playbook_effects where effect_key = $1',
        [input.key],
      );
      const names = ledger.rows[0]?.response.names ?? [];
      const by = { reason: input.reason, actor: input.actor };
      if (names.length > 0) await pauseCampaigns(client(), pool, { ...by, names });
      const persons = input.suppressScope ? await scopePersons(pool, input.incident) : [];
      if (persons.length > 0) {
        await suppressPersons(pool, { ...by, key: input.incident, personKeys: persons });
      }
      await pool.query(
        `update playbook_effects set status = 'done', updated_at = now() where effect_key = $1`,
        [input.key],
      );
      return { paused: names, suppressed: persons.length };
    },

    /** Resumes the campaigns a stop paused and lifts the incident's suppression (its undo). */
    async playbookResumeCampaigns(
      input: ActBy & { incident: string; names: string[]; lift: boolean },
    ): Promise<{ resumed: string[]; lifted: number }> {
      const by = { reason: input.reason, actor: input.actor };
      const resumed =
        input.names.length > 0
          ? await resumeCampaigns(client(), pool, { ...by, names: input.names })
          : [];
      const lifted = input.lift ? await liftSuppression(pool, input.incident, input.actor) : 0;
      return { resumed, lifted };
    },
  };
}
