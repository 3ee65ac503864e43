// Shared command-line helpers: ranges like "0-255,7", integers with 0x prefixes, usage errors.

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** "0-255", "3", "0-3,10" → sorted unique numbers within [min, max]. */
export function parseRange(spec: string, min: number, max: number): number[] {
  const out = new Set<number>();
  for (const part of spec.split(',')) {
    const m = /^\s*(\d+)\s*(?:-\s*(\d+))?\s*$/.exec(part);
    if (!m) throw new UsageError(`bad range "${part}" (expected N or N-M)`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (a > b || a < min || b > max) throw new UsageError(`range "${part}" outside ${min}-${max}`);
    for (let i = a; i <= b; i++) out.add(i);
  }
  return [...out].sort((x, y) => x - y);
}

export function parseIntArg(name: string, value: string | undefined, min: number, max: number): number {
  if (value === undefined) throw new UsageError(`--${name} needs a value`);
  // Number('') is 0: an empty value must not silently mean port 0 or a zero limit.
  const n = value.trim() === '' ? NaN : Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`--${name} must be an integer in ${min}..${max}, got "${value}"`);
  return n;
}


/** "host:port" → parts; a bare port means the given default host. */
export function parseHostPort(value: string, defaultHost: string): { host: string; port: number } {
  const i = value.lastIndexOf(':');
  const host = i < 0 ? defaultHost : value.slice(0, i) || defaultHost;
  const port = Number(i < 0 ? value : value.slice(i + 1));
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`bad address "${value}"`);
  return { host, port };
}

// A declarative option table, so every entry point parses `--opt value`, `--opt=value`, `-h`/`--help`
// and positionals the same way, and checks integers with the same words (parseIntArg).

interface OptionBase {
  /** Other spellings, written out in full (e.g. '-v', '--block_services'). */
  readonly aliases?: readonly string[];
}
export interface StringOption extends OptionBase {
  readonly kind: 'string';
  readonly default?: string;
  /** When given, the value must be one of these (error lists them in this order). */
  readonly choices?: readonly string[];
}
export interface IntOption extends OptionBase {
  readonly kind: 'int';
  readonly min: number;
  readonly max: number;
  readonly default?: number;
}
export interface FlagOption extends OptionBase {
  readonly kind: 'flag';
}
/** A string option that may be given several times; its values in order. */
export interface RepeatableOption extends OptionBase {
  readonly kind: 'repeatable';
}
export type OptionSpec = StringOption | IntOption | FlagOption | RepeatableOption;

type OptionValue<S> =
  S extends { kind: 'int'; default: number } ? number
  : S extends { kind: 'int' } ? number | undefined
  : S extends { kind: 'string'; choices: readonly (infer C)[]; default: string } ? C
  : S extends { kind: 'string'; choices: readonly (infer C)[] } ? C | undefined
  : S extends { kind: 'string'; default: string } ? string
  : S extends { kind: 'string' } ? string | undefined
  : S extends { kind: 'flag' } ? boolean
  : S extends { kind: 'repeatable' } ? string[]
  : never;

export type OptionValues<T extends Record<string, OptionSpec>> = { -readonly [K in keyof T]: OptionValue<T[K]> };

export interface ParseOptionsHow {
  /** The message for an argument that is no known option (or a positional where none is taken). */
  readonly unknown: (arg: string) => string;
  /** Whether arguments not starting with '-' are collected as positionals (default: they are unknown). */
  readonly positionals?: boolean;
}

export type ParsedOptions<T extends Record<string, OptionSpec>> =
  | { readonly help: true }
  | { readonly help: false; readonly values: OptionValues<T>; readonly positionals: string[] };

/**
 * Parses argv against `specs` (keys are the long names without '--'). `-h`/`--help` anywhere
 * before an error returns `{ help: true }`. A later repeat of a non-repeatable option wins.
 */
export function parseOptions<const T extends Record<string, OptionSpec>>(argv: readonly string[], specs: T, how: ParseOptionsHow): ParsedOptions<T> {
  const byName = new Map<string, string>();
  for (const [key, spec] of Object.entries(specs)) {
    byName.set(`--${key}`, key);
    for (const alias of spec.aliases ?? []) byName.set(alias, key);
  }
  const values: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(specs)) {
    values[key] = spec.kind === 'flag' ? false : spec.kind === 'repeatable' ? [] : spec.default;
  }
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i]!;
    if (a === '--help' || a === '-h') return { help: true };
    let inline: string | undefined;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) {
      inline = a.slice(eq + 1);
      a = a.slice(0, eq);
    }
    const key = byName.get(a);
    if (key === undefined) {
      if (how.positionals && !a.startsWith('-')) {
        positionals.push(argv[i]!);
        continue;
      }
      throw new UsageError(how.unknown(a));
    }
    const spec = specs[key]!;
    if (spec.kind === 'flag') {
      if (inline !== undefined) throw new UsageError(`${a} takes no value`);
      values[key] = true;
      continue;
    }
    const v = inline ?? argv[++i];
    if (v === undefined) throw new UsageError(`${a} needs a value`);
    switch (spec.kind) {
      case 'int':
        values[key] = parseIntArg(key, v, spec.min, spec.max);
        break;
      case 'repeatable':
        (values[key] as string[]).push(v);
        break;
      case 'string':
        if (spec.choices && !spec.choices.includes(v)) throw new UsageError(`--${key} must be ${spec.choices.join(' or ')}, got "${v}"`);
        values[key] = v;
        break;
    }
  }
  return { help: false, values: values as OptionValues<T>, positionals };
}
