import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 180_000,
    hookTimeout: 180_000,
    pool: 'forks',
    maxWorkers: 2,
    reporters: ['default'],
    // One known key for the keyed hash of emails and phones, so that tests can compute the
    // stored form of what they send (test/support.ts hashedValueOf); a set variable wins.
    env: {
      POPS_PII_HMAC_KEY:
        process.env['POPS_PII_HMAC_KEY'] ??
        '7e57000000000000000000000000000000000000000000000000000000007e57',
    },
  },
});
