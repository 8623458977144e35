// The README's main job as a test: `vhba serve` on examples/, a real guest
// booted with `vhba qemu-args`, and every disk seen where vhba predicted it
// (by-id names, address incl. LUN 300, size, block sizes, read-only flag).
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

describe('vhba serve with a real guest (scripts/demo.ts)', () => {
  it('shows every example disk in the guest as predicted', () => {
    const run = spawnSync(process.execPath, [join(root, 'scripts', 'demo.ts')], { encoding: 'utf8', timeout: 600_000 });
    const output = `${run.stdout}\n${run.stderr}`;
    expect(output, output).toMatch(/All 6 disks match what vhba predicted\./);
    expect(output).not.toMatch(/✗/);
    expect(output).toMatch(/\/dev\/disk\/by-id\/wwn-0x3000000000000d01 → \/dev\/sd[a-z]+ \[\d+:0:1:0\]/);
    expect(output).toMatch(/\[\d+:0:1:16684\]/); // LUN 300, flat addressing
    expect(output).toMatch(/stopped the guest and vhba serve \(exit 0\)/);
    expect(run.status).toBe(0);
  });
});
