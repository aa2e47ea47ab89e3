/**
 * Playbook definitions at load: the shipped ones load and plan; each kind of bad YAML is refused
 * with a message naming the file, the step (id and index), the field and the value; parameters
 * that do not fit a run are refused naming each.
 */
import { describe, expect, it } from 'vitest';
import { argsProblems, resolveParams } from '../domain/playbooks/definition.js';
import { loadPlaybookDir, parsePlaybookText } from '../domain/playbooks/file.js';
import { planRun } from '../domain/playbooks/plan.js';

const HEAD = `name: t
version: 1
description: a test
parameters:
  model: { type: string }
  n: { type: number, default: 3 }
steps:
`;

function problems(yaml: string): string {
  try {
    parsePlaybookText(yaml, 'bad.yaml');
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('the playbook loaded');
}

describe('playbook definitions', () => {
  it('loads the three shipped playbooks', () => {
    const names = loadPlaybookDir().map((p) => p.playbook.name);
    expect(names).toEqual(['feature-corruption', 'privacy-incident', 'rollback-model']);
  });

  it('names the file, line and column of a YAML syntax error', () => {
    expect(
      problems(`${HEAD}  - id: a\n    type: record\n    with: { message: [unclosed }\n`),
    ).toMatch(/^bad\.yaml: 1 problem\(s\):\n {2}- YAML at line 10, column \d+: /);
  });

  it('refuses an unknown step type naming the step and the value', () => {
    expect(problems(`${HEAD}  - id: first\n    type: freeze_rollout\n`)).toContain(
      'step "first" (steps[0]) type: Invalid option: expected one of "freeze_rollouts"',
    );
    expect(problems(`${HEAD}  - id: first\n    type: freeze_rollout\n`)).toContain(
      '(got "freeze_rollout")',
    );
  });

  it('refuses a bad argument naming the step, the field and the value', () => {
    const m = problems(
      `${HEAD}  - id: mode\n    type: set_mode\n    with: { surface: home, mode: turbo }\n`,
    );
    expect(m).toContain('step "mode" (steps[0]) with.mode: Invalid option');
    expect(m).toContain('(got "turbo")');
  });

  it("sends only POPS_PLAYBOOK_ variables as a bearer token, never the worker's other secrets", () => {
    const m = problems(
      `${HEAD}  - id: call\n    type: http\n    with: { url: 'http://127.0.0.1:1/x', auth_env: HOME }\n`,
    );
    expect(m).toContain(
      'step "call" (steps[0]) with.auth_env: must name a variable POPS_PLAYBOOK_',
    );
    expect(m).toContain('(got "HOME")');
    expect(() =>
      parsePlaybookText(
        `${HEAD}  - id: call\n    type: http\n` +
          `    with: { url: 'http://127.0.0.1:1/x', auth_env: POPS_PLAYBOOK_TOKEN }\n`,
        'ok.yaml',
      ),
    ).not.toThrow();
  });

  it('checks resolved arguments again, with pending templates standing for any value', () => {
    expect(argsProblems('rollback_model', { model: 'm', to_version: 1.5 })).toEqual([
      expect.stringMatching(/^with\.to_version: .*\(got 1\.5\)$/),
    ]);
    expect(argsProblems('rollback_model', { model: 'm', to_version: 2 })).toEqual([]);
    expect(argsProblems('set_mode', { surface: '${steps.a.surface}', mode: 'rules-only' })).toEqual(
      [],
    );
  });

  it('refuses an argument a step type does not take, and a missing one', () => {
    const m = problems(
      `${HEAD}  - id: w\n    type: wait\n    with: { duration: 5s, jitter: 1s }\n` +
        `  - id: r\n    type: rollback_model\n`,
    );
    expect(m).toContain('step "w" (steps[0]) with: Unrecognized key: "jitter"');
    expect(m).toContain('step "r" (steps[1]) with.model: Invalid input: expected string');
    expect(m).toContain('(got missing)');
  });

  it('refuses references to parameters not declared and to steps that are not earlier', () => {
    const m = problems(
      `${HEAD}  - id: a\n    type: record\n    when: params.modle != ''\n` +
        `    with: { message: "\${steps.b.to}" }\n` +
        `  - id: b\n    type: record\n    with: { message: "\${steps.b.x}" }\n`,
    );
    expect(m).toContain(
      `step "a" (steps[0]) when: refers to parameter "modle", which is not declared` +
        ` (got "params.modle != ''")`,
    );
    expect(m).toContain(
      'step "a" (steps[0]) with.message: refers to step "b", which is not an earlier step' +
        ' (got "steps.b.to")',
    );
    expect(m).toContain('step "b" (steps[1]) with.message: refers to itself (got "steps.b.x")');
  });

  it('refuses an expression that does not parse, a repeated id, a field steps do not have', () => {
    const m = problems(
      `${HEAD}  - id: a\n    type: record\n    when: "params.n >"\n    with: { message: x }\n` +
        `  - id: a\n    type: record\n    retry: 2\n    with: { message: y }\n`,
    );
    expect(m).toMatch(/step "a" \(steps\[0\]\) when: does not parse: .* \(got "params.n >"\)/);
    expect(m).toContain('step "a" (steps[1]) id: repeats an earlier step (got "a")');
    expect(m).toContain('step "a" (steps[1]) retry: is not a step field (got 2)');
  });

  it('refuses top-level problems and a default that is not of its type', () => {
    const m = problems('name: Bad Name\nversion: 0\ndescription: d\nsteps: []\n');
    expect(m).toContain('name: is not a playbook name');
    expect(m).toContain('(got "Bad Name")');
    expect(m).toContain('version: Too small');
    expect(m).toContain('steps: Too small');
    const d = problems(
      'name: t\nversion: 1\ndescription: d\nparameters: { n: { type: number, default: x } }\n' +
        'steps: [{ id: a, type: record, with: { message: m } }]\n',
    );
    expect(d).toContain('parameters.n.default: is not a number (got "x")');
  });

  it('refuses run parameters that are missing, undeclared or of the wrong type', () => {
    const p = parsePlaybookText(
      `${HEAD}  - id: a\n    type: record\n    with: { message: "\${params.model}" }\n`,
      't.yaml',
    ).playbook;
    expect(() => resolveParams(p, {})).toThrow(
      'invalid parameters of t: model: is required (a string, no default) (got missing)',
    );
    expect(() => resolveParams(p, { model: 'm', n: 'three', x: 1 })).toThrow(
      'x: is not a parameter of t (got 1); n: is not a number (got "three")',
    );
    expect(resolveParams(p, { model: 'm' })).toEqual({ model: 'm', n: 3 });
  });

  it('plans rollback-model: parameters resolved, branches on parameters decided now', () => {
    const rollback = loadPlaybookDir().find((p) => p.playbook.name === 'rollback-model');
    if (!rollback) throw new Error('rollback-model is missing');
    const plan = planRun(rollback.playbook, { model: 'm' }, {});
    expect(plan.params).toEqual({
      model: 'm',
      to_version: 0,
      webhook: '',
      api_url: '',
      api_token_env: 'POPS_PLAYBOOK_API_TOKEN',
      approvers: [],
      close_timeout: '24h',
    });
    const branch = Object.fromEntries(plan.steps.map((s) => [s.id, s.branch]));
    expect(branch).toEqual({
      freeze: 'runs',
      rollback: 'runs',
      verify: 'at run time',
      verify_api: 'at run time',
      scope: 'at run time',
      page: 'skipped',
      close: 'runs',
      closed: 'runs',
    });
    // to_version 0 resolves to null: the argument is left out (the previous alias decides).
    expect(plan.steps[1]?.args).toEqual({ model: 'm' });
    expect(planRun(rollback.playbook, { model: 'm', to_version: 1 }, {}).steps[1]?.args).toEqual({
      model: 'm',
      to_version: 1,
    });
  });
});
