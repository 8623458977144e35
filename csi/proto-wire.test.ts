// Wire/JSON compatibility of protos/csi/v1/csi.proto with the official CSI
// v1.12.0 csi.proto (scripts/check-csi-proto.sh: buf breaking, WIRE_JSON).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '..');
const SCRIPT = join(ROOT, 'scripts/check-csi-proto.sh');
const hasGo = spawnSync('go', ['version']).status === 0;

function check(proto?: string) {
  return spawnSync('bash', [SCRIPT, ...(proto ? [proto] : [])], { encoding: 'utf8', timeout: 120_000 });
}

describe.skipIf(!hasGo)('csi.proto wire compatibility (needs go)', { timeout: 120_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'vhba-csiproto-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const ours = readFileSync(join(ROOT, 'protos/csi/v1/csi.proto'), 'utf8');

  it('ours matches the official v1.12.0 csi.proto', () => {
    const r = check();
    expect(r.stdout + r.stderr).toContain('wire- and JSON-compatible with CSI v1.12.0');
    expect(r.status).toBe(0);
  });

  it.each([
    ['a field type', 'int64 limit_bytes = 2;', 'int32 limit_bytes = 2;'],
    ['a field number', 'string node_id = 1;', 'string node_id = 4;'],
    ['a field name (JSON)', 'int64 max_volumes_per_node = 2;', 'int64 max_volumes = 2;'],
  ])('fails when %s differs', (_what, from, to) => {
    expect(ours).toContain(from);
    const mutated = join(dir, 'csi.proto');
    writeFileSync(mutated, ours.replace(from, to));
    const r = check(mutated);
    expect(r.status).toBe(1);
    expect(r.stdout + r.stderr).toMatch(/changed type|deleted|changed name|json/i);
  });
});
