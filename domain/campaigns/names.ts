/** How campaign runs, schedules and notices are named. Pure, so workflow code may import it. */

/** Temporal's name for a scheduled run of `name` at `fireTime`: the id plus the RFC 3339 time. */
export function campaignWorkflowId(name: string, fireTime: Date | string): string {
  return `campaign/${name}-${fireTimeText(fireTime)}`;
}

/** The schedule of a campaign. */
export function campaignScheduleId(name: string): string {
  return `campaign/${name}`;
}

/** A fire time as Temporal's schedules print it (UTC, whole seconds). */
export function fireTimeText(fireTime: Date | string): string {
  return new Date(fireTime).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** The campaign key of a notice in the send ledger (notices have one fire time, the epoch). */
export function noticeCampaign(noticeId: string): string {
  return `notice:${noticeId}`;
}
export const NOTICE_FIRE_TIME = '1970-01-01T00:00:00.000Z';
