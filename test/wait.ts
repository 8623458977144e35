// Waiting on the host side of tests.
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Polls `condition` every 50 ms; throws naming `what` after `ms`. */
export async function waitUntil(condition: () => boolean, what: string, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Writes `dir/name` so a directory watcher never sees it half written
 * (a dotted temp file, then rename): how a user's editor or kubectl-like
 * tool drops a manifest into `vhba serve`'s directory. */
export function putManifest(dir: string, name: string, text: string): void {
  writeFileSync(join(dir, `.${name}.tmp`), text);
  renameSync(join(dir, `.${name}.tmp`), join(dir, name));
}
