// Checks for the paths a CO hands us (staging_target_path, target_path):
// absolute, no ".." component, no NUL, normalized, and inside a configured
// root even after resolving symlinks of every existing ancestor, so a
// request cannot make the plugin create or remove files elsewhere.
import { lstat, realpath } from 'node:fs/promises';
import { dirname, isAbsolute, normalize, sep } from 'node:path';
import { invalidArgument } from './errors.ts';

/** Longest path we accept (PATH_MAX). */
export const MAX_PATH_LENGTH = 4096;

/** What exists at a checked path. */
export type PathKind = 'absent' | 'file' | 'directory' | 'symlink' | 'other';

/** A path that passed the checks. */
export interface CheckedPath {
  path: string;
  kind: PathKind;
}

function isInside(child: string, root: string): boolean {
  return child === root || child.startsWith(root.endsWith(sep) ? root : root + sep);
}

/** Syntactic checks only (no file-system access); returns the normalized path.
 * `field` names the request field in error messages. */
export function checkPathSyntax(path: string, field: string, root: string): string {
  if (!path) throw invalidArgument(`${field} is required`);
  if (path.length > MAX_PATH_LENGTH) throw invalidArgument(`${field} is longer than ${MAX_PATH_LENGTH} bytes`);
  if (path.includes('\0')) throw invalidArgument(`${field} contains a NUL byte`);
  if (!isAbsolute(path)) throw invalidArgument(`${field} ${JSON.stringify(path)} must be an absolute path`);
  if (path.split('/').includes('..')) throw invalidArgument(`${field} ${JSON.stringify(path)} must not contain ".." components`);
  const normal = normalize(path).replace(/\/+$/, '') || '/';
  if (!isInside(normal, root) || normal === root) {
    throw invalidArgument(`${field} ${JSON.stringify(path)} is outside the publish root ${root}; pass a path below it or start the plugin with --publish-root covering it`);
  }
  return normal;
}

/** Longest existing ancestor of `path` (itself included), resolved. */
async function resolveExistingAncestor(path: string): Promise<string> {
  let p = path;
  for (let i = 0; i < 4096; i++) {
    try {
      return await realpath(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && (err as NodeJS.ErrnoException).code !== 'ENOTDIR') throw err;
      const up = dirname(p);
      if (up === p) return p;
      p = up;
    }
  }
  throw invalidArgument(`path ${JSON.stringify(path)} is too deep`);
}

/** Full check of a CO path against `root` (which must exist): syntax, then
 * the real location of the parent (symlinks resolved) must stay inside the
 * real root. The leaf itself is not followed: its kind is reported, so a
 * caller can refuse or accept a symlink it did not create. */
export async function checkPath(path: string, field: string, root: string): Promise<CheckedPath> {
  const normalRoot = normalize(root).replace(/\/+$/, '') || '/';
  const normal = checkPathSyntax(path, field, normalRoot);
  const realRoot = await realpath(normalRoot);
  const realParent = await resolveExistingAncestor(dirname(normal));
  if (!isInside(realParent, realRoot)) {
    throw invalidArgument(`${field} ${JSON.stringify(path)} resolves (through a symlink) to ${realParent}, outside the publish root ${realRoot}`);
  }
  let kind: PathKind = 'absent';
  try {
    const st = await lstat(normal);
    kind = st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'directory' : st.isFile() ? 'file' : 'other';
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  return { path: normal, kind };
}
