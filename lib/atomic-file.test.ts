import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeFileAtomic } from './atomic-file.ts';

const dir = mkdtempSync(join(tmpdir(), 'vhba-atomic-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('writeFileAtomic', () => {
  it('replaces the content and leaves no temp file behind', async () => {
    const path = join(dir, 'state.json');
    writeFileSync(path, 'old');
    await writeFileAtomic(path, 'new');
    expect(readFileSync(path, 'utf8')).toBe('new');
    expect(readdirSync(dir)).toEqual(['state.json']);
  });

  it('creates new files with the given mode', async () => {
    const path = join(dir, 'view.json');
    await writeFileAtomic(path, '{}', 0o644);
    expect(statSync(path).mode & 0o777).toBe(0o644);
  });

  it('fails without touching the target when the directory is missing', async () => {
    await expect(writeFileAtomic(join(dir, 'nope', 'x.json'), 'x')).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
