// The main job, end to end: `vhba serve` on the example manifests, a real
// Linux guest (QEMU, TCG) booted with the arguments `vhba qemu-args` prints,
// and what the guest sees printed beside what vhba predicted. Exits 0 only if
// every disk appears with the predicted by-id names, address, size, block
// sizes and read-only flag. Run through scripts/demo.sh, which installs what
// this needs first.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Guest } from '../test/guest/qemu.ts';
import type { GuestVm } from '../cmd/topology.ts';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const vhba = join(root, 'bin', 'vhba');
const config = process.argv[2] ?? join(root, 'examples');
const vmName = process.argv[3] ?? 'demo';
const memory = '512M';

const work = mkdtempSync(join(tmpdir(), 'vhba-demo-'));
const socketDir = join(work, 'sockets');
const stateDir = join(work, 'state');

async function waitForFile(path: string, serve: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(path)) {
    if (serve.exitCode !== null) throw new Error(`vhba serve exited with code ${serve.exitCode}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${path}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** SCSI LUNs ≥ 256 use flat addressing; Linux shows them with the 0x4000 method bit. */
function linuxLun(lun: number): number {
  return lun >= 256 ? 0x4000 | lun : lun;
}

interface Seen { device: string; hctl: string; size: number; logical: number; physical: number; ro: boolean }

function parseSeen(output: string): Map<string, Seen | null> {
  const seen = new Map<string, Seen | null>();
  for (const line of output.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f[0] !== 'BYID' || f.length < 3) continue;
    if (f[2] === 'MISSING') { seen.set(f[1]!, null); continue; }
    seen.set(f[1]!, { device: f[2]!, hctl: f[3]!, size: Number(f[4]), logical: Number(f[5]), physical: Number(f[6]), ro: f[7] === '1' });
  }
  return seen;
}

async function main(): Promise<number> {
  console.log(`== vhba serve --config ${config} --socket-dir ${socketDir}`);
  const serve = spawn(vhba, ['serve', '--config', config, '--socket-dir', socketDir, '--state-dir', stateDir, '--log-level', 'warn'], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  let guest: Guest | undefined;
  try {
    const disksJson = join(socketDir, vmName, 'disks.json');
    await waitForFile(disksJson, serve, 60_000);
    const vm = JSON.parse(readFileSync(disksJson, 'utf8')) as GuestVm;

    const args = spawnSync(vhba, ['qemu-args', '--config', config, '--socket-dir', socketDir, '--state-dir', stateDir, '--vm', vmName, '--memory', memory, '--format', 'lines'], { encoding: 'utf8' });
    if (args.status !== 0) throw new Error(`vhba qemu-args failed: ${args.stderr}`);
    const qemuArgs = args.stdout.split('\n').filter((l) => l.length > 0);
    console.log(`\n== QEMU arguments from vhba qemu-args:\n  ${qemuArgs.join(' ')}`);

    console.log('\n== booting a Debian guest (TCG; about half a minute)');
    guest = await Guest.boot({ memory, extraArgs: qemuArgs, name: 'demo', timeoutMs: 300_000 });
    console.log(`   booted in ${(guest.bootMs / 1000).toFixed(1)} s`);
    await guest.run('udevadm settle --timeout=30', { timeoutMs: 60_000 });

    const lsblk = await guest.run('lsblk -o NAME,HCTL,SIZE,LOG-SEC,PHY-SEC,RO,SERIAL,WWN,MODEL', { timeoutMs: 30_000 });
    console.log(`\n== the guest's lsblk\n${lsblk.output.trimEnd()}`);
    const byId = await guest.run('ls -l /dev/disk/by-id/ | sed -n "s/.* \\(scsi-[^ ]*\\|wwn-[^ ]*\\) -> .*\\/\\(sd[a-z]*\\)$/\\1 -> \\2/p"', { timeoutMs: 30_000 });
    console.log(`\n== the guest's /dev/disk/by-id\n${byId.output.trimEnd()}`);

    const names = vm.disks.flatMap((d) => d.guestDevicePaths.map((p) => p.replace('/dev/disk/by-id/', '')));
    const probe = names
      .map((n) => `p=/dev/disk/by-id/${n}; if [ -e "$p" ]; then d=$(readlink -f "$p"); echo BYID ${n} "$d" $(lsblk -dnbo HCTL,SIZE,LOG-SEC,PHY-SEC,RO "$d"); else echo BYID ${n} MISSING; fi`)
      .join('\n');
    const seen = parseSeen((await guest.run(probe, { timeoutMs: 60_000 })).output);

    console.log('\n== predicted by vhba  vs  seen in the guest');
    let failures = 0;
    for (const d of vm.disks) {
      const want = `C:T:L ${d.controller}:${d.target}:${d.lun}  ${d.sizeBytes} B  ${d.logicalBlockSize}/${d.physicalBlockSize}  ${d.readOnly ? 'ro' : 'rw'}`;
      console.log(`\n${d.key}  serial ${d.serial}  wwn ${d.wwn}\n  predicted: ${want}`);
      for (const p of d.guestDevicePaths) {
        const name = p.replace('/dev/disk/by-id/', '');
        const s = seen.get(name);
        if (!s) { console.log(`  ✗ ${p}: missing in the guest`); failures++; continue; }
        const [, , t, l] = s.hctl.split(':').map(Number);
        const problems: string[] = [];
        if (t !== d.target || l !== linuxLun(d.lun)) problems.push(`address ${s.hctl}, want target ${d.target} lun ${linuxLun(d.lun)}`);
        if (s.size !== d.sizeBytes) problems.push(`size ${s.size}`);
        if (s.logical !== d.logicalBlockSize || s.physical !== d.physicalBlockSize) problems.push(`blocks ${s.logical}/${s.physical}`);
        if (s.ro !== d.readOnly) problems.push(s.ro ? 'read-only' : 'writable');
        if (problems.length) failures++;
        console.log(`  ${problems.length ? '✗' : '✓'} ${p} → ${s.device} [${s.hctl}] ${s.size} B ${s.logical}/${s.physical} ${s.ro ? 'ro' : 'rw'}${problems.length ? `  (${problems.join(', ')})` : ''}`);
      }
    }
    console.log(failures === 0 ? `\nAll ${vm.disks.length} disks match what vhba predicted.` : `\n${failures} mismatches.`);
    return failures === 0 ? 0 : 1;
  } finally {
    if (guest) await guest.shutdown().catch(() => undefined);
    serve.kill('SIGTERM');
    await new Promise((r) => (serve.exitCode !== null ? r(undefined) : serve.once('exit', r)));
    console.log(`\n== stopped the guest and vhba serve (exit ${serve.exitCode ?? serve.signalCode})`);
    rmSync(work, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`demo failed: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
