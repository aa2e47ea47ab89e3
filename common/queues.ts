/**
 * Task queues by load: orchestration (workflows and light SQL activities), training (CPU-heavy),
 * io (outbound calls). Every queue name is `<prefix>-<kind>`, so a workflow finds its siblings from
 * the queue it runs on, and tests isolate themselves with their own prefix.
 */
export const QUEUE_KINDS = ['orchestration', 'training', 'io'] as const;
export type QueueKind = (typeof QUEUE_KINDS)[number];

/** The queue name for a kind under a prefix. */
export function queueName(prefix: string, kind: QueueKind): string {
  return `${prefix}-${kind}`;
}

/** The prefix of an orchestration queue name; workflow code uses it to route activities. */
export function prefixOf(orchestrationQueue: string): string {
  const suffix = '-orchestration';
  return orchestrationQueue.endsWith(suffix)
    ? orchestrationQueue.slice(0, -suffix.length)
    : orchestrationQueue;
}
