import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadAssignmentsFile, saveAssignmentsFile } from './assignment-file.ts';
import type { Assignment } from './planner.ts';

const a: Assignment = { key: 'default/a', vmName: 'vm1', ioProfile: 'shared', controller: 0, target: 1, lun: 300, serial: 'VHX', wwn: '3000000000000abc' };
const b: Assignment = { ...a, key: 'default/b', target: 2, lun: 0, serial: 'VHY', wwn: '3000000000000abd' };

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vhba-assign-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('assignments file', () => {
  it('round-trips, in key order, leaving no temp file', async () => {
    const path = join(dir, 'state', 'assignments.json');
    await saveAssignmentsFile(path, new Map([['default/b', b], ['default/a', a]]));
    const loaded = await loadAssignmentsFile(path);
    expect([...loaded.entries()]).toEqual([['default/a', a], ['default/b', b]]);
    expect(await readdir(join(dir, 'state'))).toEqual(['assignments.json']);
    // Saving again replaces the file atomically.
    await saveAssignmentsFile(path, new Map([['default/a', a]]));
    expect([...(await loadAssignmentsFile(path)).keys()]).toEqual(['default/a']);
    expect(JSON.parse(await readFile(path, 'utf8')).version).toBe(1);
  });

  it('a missing file means no assignments', async () => {
    expect((await loadAssignmentsFile(join(dir, 'nope.json'))).size).toBe(0);
  });

  it('refuses malformed files with the path in the message', async () => {
    const path = join(dir, 'assignments.json');
    await writeFile(path, '{');
    await expect(loadAssignmentsFile(path)).rejects.toThrow(`${path}: invalid JSON`);
    await writeFile(path, JSON.stringify({ version: 2, assignments: [] }));
    await expect(loadAssignmentsFile(path)).rejects.toThrow(/not an assignments file of version 1/);
    await writeFile(path, JSON.stringify({ version: 1, assignments: [{ ...a, wwn: 'XYZ' }] }));
    await expect(loadAssignmentsFile(path)).rejects.toThrow(/assignments\[0\] is malformed/);
    await writeFile(path, JSON.stringify({ version: 1, assignments: [a, a] }));
    await expect(loadAssignmentsFile(path)).rejects.toThrow(/repeats key default\/a/);
  });
});
