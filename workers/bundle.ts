/** Where the workflow code lives, for the bundler (workers and the test setup). */
import { fileURLToPath } from 'node:url';

export const workflowsPath = fileURLToPath(new URL('../workflows/index.ts', import.meta.url));
