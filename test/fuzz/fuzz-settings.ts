// Shared fast-check settings for test/fuzz: bounded runs so CI takes seconds;
// VHBA_FUZZ_RUNS scales them up for a longer local hunt (e.g. 100000), and
// VHBA_FUZZ_SEED replays a failure fast-check reported.
import type { Parameters } from 'fast-check';

/** fast-check parameters for a property whose default budget is `runs`. */
export function fuzzParams<T>(runs: number): Parameters<T> {
  const scale = Number(process.env['VHBA_FUZZ_RUNS'] ?? 0);
  const seed = process.env['VHBA_FUZZ_SEED'];
  return {
    numRuns: scale > 0 ? scale : runs,
    ...(seed !== undefined ? { seed: Number(seed) } : {}),
  };
}
