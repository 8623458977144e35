// A test guest that runs the host's own programs: the host's / is shared
// read-only into the guest over virtio-9p (QEMU -virtfs, 9P2000.L) and
// commands run chrooted into it, with the guest's /dev, /proc and /sys bound
// in and a fresh tmpfs on /run. The guest kernel's devices (scsi_debug,
// LIO + tcm_loop) are then driven by the host's node, our built addon and
// sg3-utils, without copying any of them into the initramfs.
//
//   const guest = await bootWithHostRoot({ name: 'x' });
//   const inHost = await hostRootShell(guest);
//   await inHost('node --version');
import { join } from 'node:path';
import { repoRoot } from './image.ts';
import { Guest, type BootOptions, type RunResult } from './qemu.ts';

/** The 9p mount tag the host's root is exported under. */
export const HOST_ROOT_TAG = 'hostroot';
/** Where the guest mounts the host's root. */
export const HOST_ROOT_MOUNT = '/host';
/** Writable scratch directory inside the chroot (on the tmpfs at /run): the
 * host's /tmp stays the shared read-only view, because the repository under
 * test may itself live there (a CI clone in /tmp). */
export const HOST_ROOT_SCRATCH = '/run/vhba-scratch';
/** PATH inside the chroot: the repository's Node (node_modules/.bin) first, then the usual system directories. */
export const HOST_ROOT_PATH = `${join(repoRoot, 'node_modules', '.bin')}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`;

/** Options for bootWithHostRoot: BootOptions, with more RAM and vCPUs by default. */
export interface HostRootBootOptions extends BootOptions {
  /** The host directory shared as the guest's `/host`; default `/`. */
  readonly hostPath?: string;
}

/** Runs a shell command chrooted into the host's root; resolves with its output and exit code. */
export type HostRootRunner = (command: string, options?: { timeoutMs?: number }) => Promise<RunResult>;

/** Options for hostRootShell. */
export interface HostRootShellOptions {
  /** 9p msize (the largest message), bytes; default 512 KiB (QEMU 7.2 and Linux 6.1 both accept it). */
  readonly msize?: number;
  /** Further environment for every command, as NAME=value pairs. */
  readonly env?: Readonly<Record<string, string>>;
}

/**
 * Boots the test guest with the host's root exported read-only over
 * virtio-9p (`-virtfs`, QEMU 7.2 syntax; `multidevs=remap` keeps inode numbers
 * unique across the host's mounts). Default 2 GiB RAM and 2 vCPUs: node
 * under TCG wants both.
 */
export async function bootWithHostRoot(options: HostRootBootOptions = {}): Promise<Guest> {
  const hostPath = options.hostPath ?? '/';
  if (hostPath.includes(',')) throw new Error(`host path ${JSON.stringify(hostPath)} must not contain a comma (QEMU option syntax)`);
  return Guest.boot({
    ...options,
    memory: options.memory ?? '2G',
    smp: options.smp ?? 2,
    extraArgs: [
      '-virtfs', `local,path=${hostPath},mount_tag=${HOST_ROOT_TAG},security_model=none,readonly=on,multidevs=remap`,
      ...(options.extraArgs ?? []),
    ],
  });
}

/**
 * Mounts the host's root at /host in `guest` (modules 9p and 9pnet_virtio,
 * protocol 9P2000.L, cache=loose: the share is read-only and does not change
 * during a test), binds the guest's /dev, /proc and /sys into it, puts tmpfs
 * on /host/run (never over /host/tmp: the repository may live in the host's
 * /tmp) and returns a runner for `chroot /host sh -c …` with PATH =
 * HOST_ROOT_PATH and HOME = TMPDIR = HOST_ROOT_SCRATCH. Idempotent per guest.
 */
export async function hostRootShell(guest: Guest, options: HostRootShellOptions = {}): Promise<HostRootRunner> {
  const msize = options.msize ?? 512 * 1024;
  if (!Number.isSafeInteger(msize) || msize < 4096) throw new Error(`bad msize ${msize}`);
  const m = HOST_ROOT_MOUNT;
  if (repoRoot === '/run' || repoRoot.startsWith('/run/')) throw new Error(`the repository at ${repoRoot} would be hidden by the guest's tmpfs on /run`);
  await guest.check([
    'set -e',
    'modprobe 9pnet_virtio',
    'modprobe 9p',
    `mkdir -p ${m}`,
    `if ! grep -q ' ${m} 9p ' /proc/mounts; then`,
    `  mount -t 9p -o trans=virtio,version=9p2000.L,msize=${msize},cache=loose,ro ${HOST_ROOT_TAG} ${m}`,
    `  mount -o rbind /dev ${m}/dev`,
    `  mount -t proc proc ${m}/proc`,
    `  mount -o rbind /sys ${m}/sys`,
    `  mount -t tmpfs -o mode=0755 tmpfs ${m}/run`,
    `  mkdir -p -m 1777 ${m}${HOST_ROOT_SCRATCH}`,
    'fi',
  ].join('\n'), { timeoutMs: 60_000 });
  const env = {
    PATH: HOST_ROOT_PATH,
    HOME: HOST_ROOT_SCRATCH,
    TMPDIR: HOST_ROOT_SCRATCH,
    LANG: 'C.UTF-8',
    ...options.env,
  };
  const envWords = Object.entries(env).map(([k, v]) => {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`bad environment name ${JSON.stringify(k)}`);
    return `${k}=${shellQuote(v)}`;
  });
  return (command, runOptions) =>
    guest.run(`chroot ${m} /usr/bin/env -i ${envWords.join(' ')} /bin/sh -c ${shellQuote(command)}`, runOptions);
}

/** Quotes `text` as one POSIX shell word. */
export function shellQuote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}
