// Property-based fuzzing of CSI request validation (csi/paths.ts,
// csi/wrapper.ts): paths built from hostile segments ("..", ".", empty, NUL,
// long names, symlinks that leave the root) either fail with
// INVALID_ARGUMENT or come back normalized and inside the publish root, also
// after resolving symlinks on disk; the request helpers never throw on
// arbitrary request shapes.
import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join, normalize } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { Code } from '../../csi/errors.ts';
import { checkPath, checkPathSyntax, MAX_PATH_LENGTH } from '../../csi/paths.ts';
import { lockKeysOf, subjectOf } from '../../csi/wrapper.ts';
import { fuzzParams } from './fuzz-settings.ts';

const segment = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('..', '.', '', 'a', 'pods', 'vol', 'escape', 'file', 'loop', '...', '..a', 'a..', '\0', '%2e%2e', '\\..') },
  { weight: 1, arbitrary: fc.string({ maxLength: 12 }) },
  { weight: 1, arbitrary: fc.constant('x'.repeat(300)) },
);
const hostilePath = (root: string) =>
  fc.tuple(fc.boolean(), fc.array(segment, { maxLength: 20 }), fc.boolean()).map(([underRoot, segs, absolute]) => {
    const tail = segs.join('/');
    if (underRoot) return `${root}/${tail}`;
    return absolute ? `/${tail}` : tail;
  });

function expectInvalidArgument(err: unknown): void {
  expect((err as { code?: unknown }).code).toBe(Code.INVALID_ARGUMENT);
}

describe('CSI path validation (fuzzed)', () => {
  const root = '/var/lib/kubelet';

  it('checkPathSyntax: INVALID_ARGUMENT, or a normalized absolute path strictly inside the root', () => {
    fc.assert(
      fc.property(fc.oneof(hostilePath(root), fc.string({ maxLength: 64 }), fc.constant(`${root}/${'a/'.repeat(MAX_PATH_LENGTH)}`)), (path) => {
        let normal: string;
        try {
          normal = checkPathSyntax(path, 'target_path', root);
        } catch (err) {
          expectInvalidArgument(err);
          return;
        }
        expect(isAbsolute(normal)).toBe(true);
        expect(normal.startsWith(`${root}/`)).toBe(true);
        expect(normal.split('/')).not.toContain('..');
        expect(normal).not.toContain('\0');
        expect(normalize(normal)).toBe(normal);
        expect(normal.length).toBeLessThanOrEqual(MAX_PATH_LENGTH);
      }),
      fuzzParams(5000),
    );
  });

  // A real root with symlinks pointing out of it, into it, and in a loop.
  const base = realpathSync(mkdtempSync(join(tmpdir(), 'vhba-csi-fuzz-')));
  const realRoot = join(base, 'root');
  const outside = join(base, 'outside');
  mkdirSync(join(realRoot, 'pods', 'vol'), { recursive: true });
  mkdirSync(outside);
  writeFileSync(join(realRoot, 'file'), '');
  symlinkSync(outside, join(realRoot, 'escape'));
  symlinkSync(join(realRoot, 'pods'), join(realRoot, 'a'));
  symlinkSync('loop', join(realRoot, 'loop'));
  afterAll(() => rmSync(base, { recursive: true, force: true }));

  it('checkPath: an accepted path stays inside the real root after resolving every existing ancestor', async () => {
    await fc.assert(
      fc.asyncProperty(hostilePath(realRoot), async (path) => {
        let checked;
        try {
          checked = await checkPath(path, 'staging_target_path', realRoot);
        } catch (err) {
          const code = (err as { code?: unknown }).code;
          // INVALID_ARGUMENT, or a file-system error such as ELOOP / ENAMETOOLONG
          if (typeof code === 'number') expect(code).toBe(Code.INVALID_ARGUMENT);
          else expect(typeof code).toBe('string');
          return;
        }
        let parent = dirname(checked.path);
        for (;;) {
          try {
            parent = realpathSync(parent);
            break;
          } catch {
            parent = dirname(parent);
          }
        }
        expect(parent === realRoot || parent.startsWith(`${realRoot}/`)).toBe(true);
      }),
      fuzzParams(500),
    );
  });

  it('lockKeysOf / subjectOf never throw on arbitrary request shapes and return strings', () => {
    fc.assert(
      fc.property(fc.constantFrom('CreateVolume', 'DeleteVolume', 'CreateSnapshot', 'DeleteSnapshot', 'NodePublishVolume', 'x'), fc.anything({ withNullPrototype: true }), (method, request) => {
        const keys = lockKeysOf(method, request);
        for (const k of keys) expect(typeof k).toBe('string');
        expect(() => subjectOf(request)).not.toThrow();
      }),
      fuzzParams(2000),
    );
  });
});
