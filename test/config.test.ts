import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../common/config.js';
import { unsubscribeSecret } from '../domain/privacy/keys.js';

describe('configuration from the environment', () => {
  it('uses the embedded defaults when nothing is set', () => {
    const config = loadConfig({});
    expect(config.DATABASE_URL).toBeUndefined();
    expect(config.TEMPORAL_ADDRESS).toBeUndefined();
    expect(config.TEMPORAL_NAMESPACE).toBe('default');
    expect(config.POPS_HTTP_PORT).toBe(8080);
    expect(config.POPS_TASK_QUEUE_PREFIX).toBe('pops');
  });

  it('treats an empty variable as unset', () => {
    expect(loadConfig({ DATABASE_URL: '', TEMPORAL_ADDRESS: ' ' }).DATABASE_URL).toBeUndefined();
  });

  it('names the variable and the value of a wrong port', () => {
    expect(() => loadConfig({ POPS_HTTP_PORT: 'eighty' })).toThrow(/POPS_HTTP_PORT="eighty"/);
    expect(() => loadConfig({ POPS_PG_PORT: '70000' })).toThrow(/POPS_PG_PORT="70000"/);
  });

  it('rejects a database URL of another scheme and a temporal address without a port', () => {
    const err = (() => {
      try {
        loadConfig({ DATABASE_URL: 'mysql://x', TEMPORAL_ADDRESS: 'localhost' });
      } catch (e) {
        return e as ConfigError;
      }
      throw new Error('expected a ConfigError');
    })();
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.problems).toHaveLength(2);
    expect(err.message).toContain('DATABASE_URL="mysql://x"');
    expect(err.message).toContain('TEMPORAL_ADDRESS="localhost"');
  });

  it('rejects an unknown training backend and log level', () => {
    expect(() => loadConfig({ POPS_TRAIN_BACKEND: 'gpu' })).toThrow(/POPS_TRAIN_BACKEND="gpu"/);
    expect(() => loadConfig({ LOG_LEVEL: 'loud' })).toThrow(/LOG_LEVEL="loud"/);
  });
});

describe('the unsubscribe secret', () => {
  const saved = { ...process.env };
  afterEach(() => {
    process.env = { ...saved };
  });

  it('refuses the public default of old versions, naming the variable', () => {
    expect(() => loadConfig({ POPS_UNSUBSCRIBE_SECRET: 'pops-local-unsubscribe-secret' })).toThrow(
      'POPS_UNSUBSCRIBE_SECRET="pops-local-unsubscribe-secret": is the public default of old',
    );
    expect(() => loadConfig({ POPS_UNSUBSCRIBE_SECRET: 'short' })).toThrow(
      /POPS_UNSUBSCRIBE_SECRET="short"/,
    );
  });

  it('is a random key kept in the state dir when unset: one per installation', () => {
    delete process.env['POPS_UNSUBSCRIBE_SECRET'];
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'pops-unsub-'));
    const secrets = ['a', 'b'].map((dir) => {
      process.env['POPS_STATE_DIR'] = path.join(root, dir);
      const secret = unsubscribeSecret();
      const file = path.join(root, dir, 'keys', 'unsubscribe.key');
      expect(fs.readFileSync(file, 'utf8').trim()).toBe(secret);
      expect(fs.statSync(file).mode & 0o777).toBe(0o600);
      // Kept: the next call (another process of the same installation) reads the same one.
      expect(unsubscribeSecret()).toBe(secret);
      return secret;
    });
    expect(secrets[0]).toMatch(/^[0-9a-f]{64}$/);
    expect(secrets[0]).not.toBe(secrets[1]);
    process.env['POPS_UNSUBSCRIBE_SECRET'] = 'a-secret-of-my-own';
    expect(unsubscribeSecret()).toBe('a-secret-of-my-own');
    fs.rmSync(root, { recursive: true });
  });
});
