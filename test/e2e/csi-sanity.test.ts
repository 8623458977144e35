// The upstream CSI conformance suite against our plugin: the real csi-sanity
// binary (kubernetes-csi/csi-test v5.4.0) drives `vhba csi --mode all`, which
// drives the HBA engine (hba/engine.ts behind its control server; the
// in-memory double only if the real engine cannot be loaded, and then the
// test says so). Skips are listed with reasons in csi/SANITY-SKIPS.md; any
// failed spec, or a skipped spec not listed there, fails the test.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCsiStack, type CsiStack } from '../csi/stack.ts';
import { cacheDir } from '../cache.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const CACHE = cacheDir();
const SANITY = join(CACHE, 'bin', 'csi-sanity');
const SANITY_VERSION = 'v5.4.0';

function ensureSanity(): void {
  if (existsSync(SANITY)) return;
  const go = spawnSync('go', ['install', `github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@${SANITY_VERSION}`], {
    env: { ...process.env, GOBIN: join(CACHE, 'bin') }, stdio: 'inherit',
  });
  if (go.status !== 0 || !existsSync(SANITY)) throw new Error(`csi-sanity is missing at ${SANITY} and go install failed; run scripts/build-go-tools.sh`);
}

/** Skip patterns and the listed self-skipped spec prefixes from SANITY-SKIPS.md. */
function readSkips(): { patterns: string[]; allowed: string[] } {
  const text = readFileSync(join(ROOT, 'csi/SANITY-SKIPS.md'), 'utf8');
  const block = /<!-- skip-patterns:start -->([\s\S]*?)<!-- skip-patterns:end -->/.exec(text)?.[1] ?? '';
  const patterns = [...block.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
  const allowed = [...text.matchAll(/^\| `([^`]+)` \|/gm)].map((m) => m[1]!);
  return { patterns, allowed };
}

interface SpecReport { State: string; ContainerHierarchyTexts: string[] | null; LeafNodeText: string; Failure?: { Message: string } }

describe('csi-sanity against vhba csi --mode all', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vhba-sanity-'));
  let stack: CsiStack | undefined;
  let engineKind = '';

  beforeAll(async () => {
    ensureSanity();
    stack = await startCsiStack({ dir, nodeId: 'sanity-node' });
    engineKind = stack.engineKind;
  });

  afterAll(() => {
    stack?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const accessType of ['mount', 'block']) {
    it(`passes every spec for the claimed capabilities (${accessType} volumes)`, () => {
      const { patterns, allowed } = readSkips();
      const report = join(dir, `report-${accessType}.json`);
      const args = [
        '--csi.endpoint', `unix://${join(dir, 'csi.sock')}`,
        '--csi.mountdir', join(dir, 'pub', 'mount'), '--csi.stagingdir', join(dir, 'pub', 'staging'),
        '--csi.testvolumesize', String(64 << 20), '--csi.testvolumeaccesstype', accessType, '--csi.testnodevolumeattachlimit',
        '--ginkgo.no-color', '--ginkgo.json-report', report,
        ...(patterns.length > 0 ? ['--ginkgo.skip', patterns.join('|')] : []),
      ];
      const run = spawnSync(SANITY, args, { cwd: dir, encoding: 'utf8', timeout: 600_000 });
      const specs = (JSON.parse(readFileSync(report, 'utf8')) as { SpecReports: SpecReport[] }[])[0]!.SpecReports.filter((s) => s.LeafNodeText);
      const name = (s: SpecReport) => [...(s.ContainerHierarchyTexts ?? []), s.LeafNodeText].join(' ');
      const count = (state: string) => specs.filter((s) => s.State === state).length;
      const failed = specs.filter((s) => s.State !== 'passed' && s.State !== 'skipped' && s.State !== 'pending');
      const unlisted = specs.filter((s) => (s.State === 'skipped' || s.State === 'pending') && !allowed.some((a) => name(s).startsWith(a)));
      console.log(`csi-sanity ${SANITY_VERSION} (${accessType}, engine: ${engineKind}): ${count('passed')} passed, ${failed.length} failed, ${count('skipped')} skipped, ${count('pending')} pending`);
      for (const s of failed) console.log(`  FAILED ${name(s)}: ${s.Failure?.Message ?? ''}`);
      for (const s of unlisted) console.log(`  SKIPPED but not listed in csi/SANITY-SKIPS.md: ${name(s)}`);
      if (engineKind !== 'real') console.log('  NOTE: the real engine could not be loaded; ran against the in-memory engine double');
      expect(failed.map(name)).toEqual([]);
      expect(unlisted.map(name)).toEqual([]);
      expect(count('passed')).toBeGreaterThan(60);
      expect(run.status, run.stdout.slice(-2000)).toBe(0);
    });
  }
});
