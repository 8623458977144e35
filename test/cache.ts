// Where the project's tests and scripts cache what they build (guest image,
// Go tools, fuzz builds): $VHBA_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/vhba.
// Outside the work tree, so a fresh clone (as CI makes) reuses it.
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

/** The cache root; scripts/*.sh compute the same default. */
export function cacheDir(): string {
  const fromEnv = process.env['VHBA_CACHE'];
  if (fromEnv) return resolve(fromEnv);
  const xdg = process.env['XDG_CACHE_HOME'];
  return join(xdg ? resolve(xdg) : join(homedir(), '.cache'), 'vhba');
}
