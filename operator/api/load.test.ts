import { mkdtemp, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { formatLoadError, loadManifests } from './load.ts';

const disk = (name: string, extra = '') => `apiVersion: vhba.io/v1alpha1
kind: VirtualDisk
metadata:
  name: ${name}
spec:
  vmName: vm1
  capacity: 64Mi
  source:
    file:
      path: ${name}.img
${extra}`;

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vhba-load-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('loadManifests', () => {
  it('reads *.yaml, *.yml and *.json, multi-document YAML, and ignores other files and dotfiles', async () => {
    await writeFile(join(dir, 'a.yaml'), `${disk('a')}---\n${disk('b')}---\n`);
    await writeFile(join(dir, 'c.yml'), disk('c'));
    await writeFile(join(dir, 'd.json'), JSON.stringify({
      apiVersion: 'vhba.io/v1alpha1', kind: 'VirtualDisk', metadata: { name: 'd' },
      spec: { vmName: 'vm1', capacity: '64Mi', source: { file: { path: 'd.img' } } },
    }));
    await writeFile(join(dir, 'README.md'), 'not a manifest: {');
    await writeFile(join(dir, '.hidden.yaml'), 'garbage: [');
    await writeFile(join(dir, 'notes.txt'), 'garbage: [');
    await mkdir(join(dir, 'sub.yaml'));
    await symlink(join(dir, 'c.yml'), join(dir, 'link.yaml'));
    const result = await loadManifests(dir);
    // link.yaml duplicates c: proves symlinked files are read, and duplicates reported.
    expect(result.disks.map((d) => d.disk.key)).toEqual(['default/a', 'default/b', 'default/c', 'default/d']);
    expect(result.disks[1]).toMatchObject({ file: join(dir, 'a.yaml'), document: 2 });
    expect(result.errors).toHaveLength(1);
    expect(result.errors[0]).toMatchObject({ file: join(dir, 'link.yaml'), field: 'metadata.name' });
    expect(result.errors[0]?.message).toContain(join(dir, 'c.yml'));
  });

  it('loads a single file', async () => {
    const file = join(dir, 'one.yaml');
    await writeFile(file, disk('one'));
    const result = await loadManifests(file);
    expect(result.errors).toEqual([]);
    expect(result.disks.map((d) => d.disk.name)).toEqual(['one']);
  });

  it('names the file, the document and the field of each error', async () => {
    await writeFile(join(dir, 'bad.yaml'), `${disk('ok')}---\n${disk('bad', '  serial: "  padded  "\n  address: {target: 300, lun: 0}\n')}`);
    const result = await loadManifests(dir);
    expect(result.disks.map((d) => d.disk.name)).toEqual(['ok']);
    const lines = result.errors.map(formatLoadError);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(new RegExp(`^${join(dir, 'bad.yaml')} \\(document 2\\): spec\\.serial: .*allowed: 1–20 printable ASCII`));
    expect(lines[1]).toMatch(/\(document 2\): spec\.address\.target: 300 is out of range; allowed: an integer from 0 to 255/);
  });

  it('reports YAML and JSON syntax errors and duplicate keys with the file', async () => {
    await writeFile(join(dir, 'broken.yaml'), 'spec: [unclosed\n');
    await writeFile(join(dir, 'dupkey.yaml'), 'a: 1\na: 2\n');
    await writeFile(join(dir, 'broken.json'), '{"apiVersion":');
    const result = await loadManifests(dir);
    expect(result.disks).toEqual([]);
    const byFile = new Map(result.errors.map((e) => [e.file, e]));
    expect(byFile.get(join(dir, 'broken.yaml'))?.message).toMatch(/invalid YAML/);
    expect(byFile.get(join(dir, 'dupkey.yaml'))?.message).toMatch(/invalid YAML/);
    expect(byFile.get(join(dir, 'broken.json'))?.message).toMatch(/invalid JSON/);
  });

  it('reports a duplicate namespace/name across files naming both files', async () => {
    await writeFile(join(dir, '1.yaml'), disk('same'));
    await writeFile(join(dir, '2.yaml'), disk('same'));
    const result = await loadManifests(dir);
    expect(result.disks).toHaveLength(1);
    expect(result.errors).toHaveLength(1);
    const line = formatLoadError(result.errors[0]!);
    expect(line).toContain(join(dir, '2.yaml'));
    expect(line).toContain(join(dir, '1.yaml'));
    expect(line).toMatch(/duplicate VirtualDisk default\/same/);
  });

  it('the same name in different namespaces is fine', async () => {
    await writeFile(join(dir, '1.yaml'), disk('same').replace('  name: same', '  name: same\n  namespace: ns1'));
    await writeFile(join(dir, '2.yaml'), disk('same'));
    const result = await loadManifests(dir);
    expect(result.errors).toEqual([]);
    expect(result.disks.map((d) => d.disk.key).sort()).toEqual(['default/same', 'ns1/same']);
  });

  it('skips empty documents and reports a missing path', async () => {
    await writeFile(join(dir, 'empty.yaml'), '---\n---\n# only a comment\n');
    expect(await loadManifests(dir)).toEqual({ disks: [], errors: [] });
    const missing = await loadManifests(join(dir, 'nope'));
    expect(missing.errors[0]).toMatchObject({ file: join(dir, 'nope'), message: 'cannot read: ENOENT' });
  });
});
