import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../common/config.js';

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
