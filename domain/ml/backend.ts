/**
 * Loads TensorFlow.js once per process and picks the backend that trains. `tfjs-node` (native
 * libtensorflow) is optional and often missing; the wasm and cpu backends always ship.
 *
 * Every candidate must pass a one-step training smoke test (Dense + relu + sigmoid + log loss +
 * the Adam update ops), because a backend without some gradient kernel only fails mid-training.
 * In tfjs 4.22 the wasm backend passes: it has every kernel the pops trainer needs.
 */
import type * as Tfjs from '@tensorflow/tfjs';

/** The TensorFlow.js namespace, as handed to the model and trainer modules. */
export type Tf = typeof Tfjs;

/** A TensorFlow.js backend pops can train on. */
export type BackendName = 'tensorflow' | 'wasm' | 'cpu';

/** What the caller asked for: a named backend, or the best one available. */
export type BackendPreference = 'auto' | BackendName;

/** The slice of a pino logger that backend selection uses. */
export interface BackendLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/** TensorFlow.js with its backend set and ready. */
export interface LoadedTensorflow {
  tf: Tf;
  backend: BackendName;
}

/**
 * The order 'auto' tries. Native TensorFlow is fastest by far; wasm (SIMD, XNNPACK) beats the
 * plain-JS cpu backend for the [64, 32] ranking MLP (see bench/train-throughput.ts).
 */
export const AUTO_ORDER: readonly BackendName[] = ['tensorflow', 'wasm', 'cpu'];

// Held in a variable so that TypeScript does not try to resolve the optional package.
const TFJS_NODE_MODULE = '@tensorflow/tfjs-node';

let loaded: { preference: BackendPreference; result: Promise<LoadedTensorflow> } | undefined;

/**
 * Loads TensorFlow.js and sets the training backend, once per process; later calls get the same
 * result. 'auto' tries AUTO_ORDER and logs one line naming the backend chosen and why the others
 * were skipped. Thrown when an explicit preference is unavailable (the message names
 * POPS_TRAIN_BACKEND and the value), or when it differs from the backend already loaded.
 */
export async function loadTensorflow(
  preference: BackendPreference,
  log?: BackendLog,
): Promise<LoadedTensorflow> {
  if (!loaded) {
    const result = selectBackend(preference, log);
    loaded = { preference, result };
    // A failed load may succeed later (e.g. after a package is installed), so do not keep it.
    result.catch(() => {
      if (loaded?.result === result) loaded = undefined;
    });
  }

  const current = await loaded.result;
  if (preference !== 'auto' && preference !== current.backend) {
    throw new Error(
      `POPS_TRAIN_BACKEND=${preference} was asked for, but this process already trains on ` +
        `${current.backend} (loaded for ${loaded.preference}); one backend per process`,
    );
  }
  return current;
}

async function selectBackend(
  preference: BackendPreference,
  log: BackendLog | undefined,
): Promise<LoadedTensorflow> {
  const tf = await import('@tensorflow/tfjs');
  // Production mode silences the "install tfjs-node" banner and skips per-op debug checks.
  tf.enableProdMode();

  const candidates = preference === 'auto' ? AUTO_ORDER : [preference];
  const skipped: Partial<Record<BackendName, string>> = {};
  for (const backend of candidates) {
    const problem = await tryBackend(tf, backend);
    if (problem === undefined) {
      logChoice(log, preference, backend, skipped);
      return { tf, backend };
    }
    skipped[backend] = problem;
  }

  if (preference !== 'auto') {
    throw new Error(`POPS_TRAIN_BACKEND=${preference} is not available: ${skipped[preference]}`);
  }
  throw new Error(`POPS_TRAIN_BACKEND=auto found no usable backend: ${JSON.stringify(skipped)}`);
}

/** Activates the backend and returns why it cannot train, or undefined when it can. */
async function tryBackend(tf: Tf, backend: BackendName): Promise<string | undefined> {
  try {
    await registerBackend(backend);
  } catch (error) {
    return `cannot load its package: ${firstLine(error)}`;
  }
  if (!(await tf.setBackend(backend))) return 'registered but failed to initialize';
  await tf.ready();

  try {
    smokeTrainingStep(tf);
    return undefined;
  } catch (error) {
    return `cannot train: ${firstLine(error)}`;
  }
}

async function registerBackend(backend: BackendName): Promise<void> {
  if (backend === 'tensorflow') {
    // libtensorflow otherwise prints CPU-feature notices to stderr on load.
    process.env['TF_CPP_MIN_LOG_LEVEL'] ??= '2';
    await import(TFJS_NODE_MODULE);
  } else if (backend === 'wasm') {
    await import('@tensorflow/tfjs-backend-wasm');
  }
  // cpu is registered by @tensorflow/tfjs itself.
}

/**
 * One gradient step of a tiny relu → sigmoid network under log loss, followed by the Adam update
 * arithmetic: throws "Kernel X not registered" on a backend that lacks any op the trainer uses.
 */
function smokeTrainingStep(tf: Tf): void {
  const w1 = tf.variable(tf.randomUniform([2, 4], -1, 1, 'float32', 1), true);
  const b1 = tf.variable(tf.zeros([4]), true);
  const w2 = tf.variable(tf.randomUniform([4, 1], -1, 1, 'float32', 2), true);
  try {
    tf.tidy(() => {
      const x = tf.tensor2d([0.5, -1, 2, 0.25, -0.5, 1], [3, 2]);
      const y = tf.tensor2d([1, 0, 1], [3, 1]);
      const { value, grads } = tf.variableGrads(() => {
        const hidden = tf.relu(tf.add(tf.matMul(x, w1), b1));
        return tf.losses.logLoss(y, tf.sigmoid(tf.matMul(hidden, w2)));
      }, [w1, b1, w2]);
      for (const w of [w1, b1, w2]) {
        const g = grads[w.name];
        if (!g) throw new Error(`no gradient for ${w.name}`);
        w.assign(tf.sub(w, tf.div(tf.mul(g, 0.1), tf.add(tf.sqrt(tf.square(g)), 1e-7))));
      }
      const loss = value.dataSync()[0];
      if (!Number.isFinite(loss)) throw new Error(`the smoke step loss is ${loss}`);
    });
  } finally {
    tf.dispose([w1, b1, w2]);
  }
}

function logChoice(
  log: BackendLog | undefined,
  preference: BackendPreference,
  backend: BackendName,
  skipped: Partial<Record<BackendName, string>>,
): void {
  if (!log) return;
  const facts = { backend, preference, skipped };
  // A missing tfjs-node is the normal case; any other skip means a broken install.
  const surprising = Object.entries(skipped).some(
    ([name, why]) => name !== 'tensorflow' || !why.startsWith('cannot load its package'),
  );
  if (surprising) log.warn(facts, 'TensorFlow.js training backend chosen after a failure');
  else log.info(facts, 'TensorFlow.js training backend chosen');
}

function firstLine(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.split('\n', 1)[0] ?? text;
}
