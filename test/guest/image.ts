// Locates (building it first if needed) the test guest made by
// scripts/build-guest-image.sh: a Debian kernel and an initramfs of Debian
// packages, cached under $VHBA_CACHE/guest (default ~/.cache/vhba/guest).
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cacheDir } from '../cache.ts';

/** The repository's root directory. */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Paths of a built guest image. */
export interface GuestImage {
  readonly kernel: string;
  readonly initrd: string;
  /** Directory of optional layers (`<name>.cpio.zst`), appended on request. */
  readonly layersDir: string;
  /** The build's input stamp: kernel and package versions. */
  readonly stamp: string;
}

/** The directory the image is cached in. */
export function guestCacheDir(): string {
  return join(cacheDir(), 'guest');
}

let built: GuestImage | undefined;

/**
 * Runs scripts/build-guest-image.sh once per process (a fast no-op when the
 * cache is current) and returns the image's paths.
 */
export function ensureGuestImage(): GuestImage {
  if (built) return built;
  const script = join(repoRoot, 'scripts', 'build-guest-image.sh');
  const result = spawnSync('bash', [script], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (result.status !== 0) {
    throw new Error(`build-guest-image.sh failed (${result.status ?? result.signal}):\n${result.stdout}\n${result.stderr}`);
  }
  const dir = guestCacheDir();
  const image: GuestImage = {
    kernel: join(dir, 'vmlinuz'),
    initrd: join(dir, 'initrd.img'),
    layersDir: join(dir, 'layers'),
    stamp: readFileSync(join(dir, 'stamp'), 'utf8'),
  };
  for (const path of [image.kernel, image.initrd]) {
    if (!existsSync(path)) throw new Error(`guest image incomplete: ${path} missing after build`);
  }
  built = image;
  return image;
}
