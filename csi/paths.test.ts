import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { checkPath, checkPathSyntax } from './paths.ts';

describe('CO path checks', () => {
  const base = mkdtempSync(join(tmpdir(), 'vhba-paths-'));
  const root = join(base, 'root');
  const outside = join(base, 'outside');
  mkdirSync(join(root, 'pods', 'p1'), { recursive: true });
  mkdirSync(outside);
  symlinkSync(outside, join(root, 'escape'));            // a directory symlink leading out
  symlinkSync(join(root, 'pods'), join(root, 'inside')); // one staying in
  writeFileSync(join(root, 'pods', 'file'), '');
  afterAll(() => rmSync(base, { recursive: true, force: true }));

  const invalid = { code: grpc.status.INVALID_ARGUMENT };

  it('rejects empty, relative, ".." and NUL paths with the field named', () => {
    expect(() => checkPathSyntax('', 'target_path', root)).toThrow(/target_path is required/);
    expect(() => checkPathSyntax('some/path', 'target_path', root)).toThrow(/must be an absolute path/);
    expect(() => checkPathSyntax(`${root}/pods/../../x`, 'target_path', root)).toThrow(/"\.\."/);
    expect(() => checkPathSyntax(`${root}/a\0b`, 'target_path', root)).toThrow(/NUL/);
    expect(() => checkPathSyntax(`${root}/a`.padEnd(5000, 'a'), 'target_path', root)).toThrow(/longer/);
  });

  it('rejects paths outside the root, and the root itself', async () => {
    await expect(checkPath('/etc/passwd', 'target_path', root)).rejects.toMatchObject({ ...invalid, message: expect.stringMatching(/outside the publish root/) });
    await expect(checkPath(`${root}-sibling/x`, 'target_path', root)).rejects.toMatchObject(invalid);
    await expect(checkPath(root, 'target_path', root)).rejects.toMatchObject(invalid);
  });

  it('rejects a path whose parent escapes the root through a symlink', async () => {
    await expect(checkPath(join(root, 'escape', 'target'), 'target_path', root)).rejects.toMatchObject({ ...invalid, message: expect.stringMatching(/through a symlink/) });
    await expect(checkPath(join(root, 'escape', 'deeper', 'target'), 'target_path', root)).rejects.toMatchObject(invalid);
  });

  it('accepts paths inside the root and reports what is there without following the leaf', async () => {
    expect(await checkPath(join(root, 'pods', 'p1', 'target'), 'target_path', root)).toEqual({ path: join(root, 'pods', 'p1', 'target'), kind: 'absent' });
    expect((await checkPath(join(root, 'inside', 'p1'), 'target_path', root)).kind).toBe('directory');
    expect((await checkPath(join(root, 'pods', 'file'), 'target_path', root)).kind).toBe('file');
    expect((await checkPath(join(root, 'escape'), 'target_path', root)).kind).toBe('symlink');
    expect((await checkPath(`${root}/pods//p1/`, 'target_path', root)).path).toBe(join(root, 'pods', 'p1'));
  });
});
