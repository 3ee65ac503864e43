// util/args parseOptions: the one option parser every `eggsfs` entry point uses. The services'
// own tests exercise their options end to end; this pins the parser's rules and messages.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UsageError, parseOptions } from '../src/util/args.js';

const SPECS = {
  dir: { kind: 'repeatable' },
  bind: { kind: 'string', default: '127.0.0.1' },
  port: { kind: 'int', min: 1, max: 65535 },
  count: { kind: 'int', min: 1, max: 64, default: 10, aliases: ['--count_alias'] },
  sync: { kind: 'string', default: 'normal', choices: ['normal', 'full'] },
  verbose: { kind: 'flag', aliases: ['-v'] },
} as const;
const how = { unknown: (a: string) => `unknown option ${a}` };

function parsed(argv: string[], positionals = false) {
  const r = parseOptions(argv, SPECS, { ...how, positionals });
  assert.equal(r.help, false);
  if (r.help) throw new Error('unreachable');
  return r;
}

function usageError(argv: string[], message: string, positionals = false): void {
  assert.throws(() => parseOptions(argv, SPECS, { ...how, positionals }), (e: unknown) => e instanceof UsageError && e.message === message);
}

test('defaults, both value spellings, aliases, repeats and flags', () => {
  const d = parsed([]);
  assert.deepEqual(d.values, { dir: [], bind: '127.0.0.1', port: undefined, count: 10, sync: 'normal', verbose: false });
  const r = parsed(['--dir', 'a', '--dir=b', '--port=80', '--count_alias', '7', '--bind', 'x', '--bind', 'y', '-v', '--sync', 'full']);
  assert.deepEqual(r.values, { dir: ['a', 'b'], bind: 'y', port: 80, count: 7, sync: 'full', verbose: true });
  // A value is taken as given, even one that looks like an option.
  assert.equal(parsed(['--bind', '-h']).values.bind, '-h');
  assert.equal(parsed(['--bind=a=b']).values.bind, 'a=b');
});

test('help, positionals and errors', () => {
  assert.deepEqual(parseOptions(['--help', '--nonsense'], SPECS, how), { help: true });
  assert.deepEqual(parseOptions(['-v', '-h'], SPECS, how), { help: true });
  assert.deepEqual(parsed(['d1', '-v', 'd2'], true).positionals, ['d1', 'd2']);
  usageError(['d1'], 'unknown option d1');
  usageError(['--nonsense'], 'unknown option --nonsense', true);
  usageError(['--nonsense=1'], 'unknown option --nonsense');
  usageError(['-x'], 'unknown option -x', true);
  usageError(['--port'], '--port needs a value');
  usageError(['--count_alias'], '--count_alias needs a value');
  usageError(['--port', '0'], '--port must be an integer in 1..65535, got "0"');
  usageError(['--port=65536'], '--port must be an integer in 1..65535, got "65536"');
  usageError(['--count_alias', '1.5'], '--count must be an integer in 1..64, got "1.5"');
  usageError(['--sync', 'sometimes'], '--sync must be normal or full, got "sometimes"');
  usageError(['--verbose=1'], '--verbose takes no value');
  usageError(['--port='], '--port must be an integer in 1..65535, got ""');
  usageError(['--count', ' '], '--count must be an integer in 1..64, got " "');
});
