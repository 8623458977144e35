// Test-only crash points: with VHBA_CRASH_AFTER=<step>[:<n>] in the
// environment, the process exits (code 86, no cleanup, like a kill) right
// after the n-th (default 1st) successful side effect named <step>. The e2e
// tests use it to stop the operator between each pair of side effects and
// check that a restart converges. Unset (production): a no-op.

/** Names of the side effects, in the order a disk's life performs them. */
export const CRASH_STEPS = [
  'finalizer-added', 'status-patched', 'claim-created', 'claim-updated', 'claim-deleted', 'finalizer-removed', 'event-recorded',
] as const;
export type CrashStep = (typeof CRASH_STEPS)[number];

/** Exit code of a deliberate crash. */
export const CRASH_EXIT_CODE = 86;

/** Parses "step" or "step:n"; undefined when unset or malformed. */
export function parseCrashSpec(value: string | undefined): { step: CrashStep; count: number } | undefined {
  if (value === undefined || value === '') return undefined;
  const [step, count = '1'] = value.split(':');
  if (!CRASH_STEPS.includes(step as CrashStep) || !/^[1-9][0-9]{0,6}$/.test(count)) return undefined;
  return { step: step as CrashStep, count: Number(count) };
}

const spec = parseCrashSpec(process.env['VHBA_CRASH_AFTER']);
let seen = 0;

/** Marks that side effect `step` just happened; exits if the test asked for it. */
export function crashPoint(step: CrashStep): void {
  if (spec === undefined || spec.step !== step) return;
  seen += 1;
  if (seen >= spec.count) {
    process.stderr.write(`vhba operator: VHBA_CRASH_AFTER=${step}:${spec.count}: exiting now\n`);
    process.exit(CRASH_EXIT_CODE);
  }
}
