/**
 * The workflow's clock. Inside the workflow sandbox `Date` is Temporal's workflow time (the time
 * of the workflow task being processed, recorded in history), so a replay reads the same instants.
 * Workflow code.
 */

/** Workflow time in epoch milliseconds. */
export function workflowNow(): number {
  return new Date().getTime();
}
