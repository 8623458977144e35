// Run by node inside the test guest, chrooted into the host's root
// (test/guest/host-root.ts), after test/passthrough/guest-devices.sh made the
// devices:
//
//   node test/passthrough/in-guest.ts $TMPDIR/devices.json
//
// Creates an engine with one controller: target 0 LUN 0 an emulated file
// disk, LUN 1 the scsi_debug disk (hostDevice by its /dev/sg node, 4 s
// timeout), LUN 2 the
// LIO disk (hostDevice by its /dev/disk/by-id link; the other tcm_loop nexus
// of the same LUN is the second initiator). Connects TestFrontend and runs the
// checks of test/passthrough/scenario.ts against sg3-utils' sg_raw on the
// devices directly. Prints one JSON document between VHBA-PT-RESULT-BEGIN and
// VHBA-PT-RESULT-END; test/e2e/passthrough-sg.test.ts asserts on it.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, realpathSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { createEngine } from '../../hba/engine.ts';
import { TestFrontend } from '../../hba/vhost-user/test-frontend.ts';
import {
  compareIdentity, describeOutcome, persistentReserve, refusedOpcode, removalUnderLoad, roundTrip, rw10, VhbaPath,
  type DirectPath, type Outcome,
} from './scenario.ts';

/** One device as guest-devices.sh describes it. */
interface GuestDevice {
  hctl: string;
  block: string;
  sg: string;
  vendor: string;
  model: string;
  initiator?: string;
  byId: string[];
}
interface GuestDevices {
  scsiDebug: GuestDevice;
  lioA: GuestDevice;
  lioB: GuestDevice;
  lioSerial: string;
  byId: Record<string, string>;
}

const BLOCK = 4096;
/** The scsi_debug LUN's per-command timeout (the timeout check waits for it). */
const SCSI_DEBUG_TIMEOUT_MS = 4000;
const SCSI_DEBUG_SYSFS = '/sys/bus/pseudo/drivers/scsi_debug';
const WORK = join(tmpdir(), 'vhba-pt');
const STATUS_NAMES: Record<string, number> = {
  good: 0x00, 'check condition': 0x02, 'condition met': 0x04, busy: 0x08,
  'reservation conflict': 0x18, 'task set full': 0x28, 'aca active': 0x30, 'task aborted': 0x40,
};

/** The device reached with sg3-utils' sg_raw (one process per command). */
class SgRawPath implements DirectPath {
  readonly name: string;
  readonly #device: string;
  #n = 0;

  constructor(device: string) {
    this.#device = device;
    this.name = `sg_raw ${device}`;
  }

  execute(cdb: Buffer, options: { dataOut?: Buffer; dataInLength?: number } = {}): Promise<Outcome> {
    const id = `${process.pid}-${this.#n++}`;
    const args = ['-v', '-t', '20'];
    const outFile = join(WORK, `sgraw-${id}.out`);
    const inFile = join(WORK, `sgraw-${id}.in`);
    if (options.dataInLength) args.push('-r', String(options.dataInLength), '-o', outFile);
    if (options.dataOut && options.dataOut.length > 0) {
      writeFileSync(inFile, options.dataOut);
      args.push('-s', String(options.dataOut.length), '-i', inFile);
    }
    args.push(this.#device, ...[...cdb].map((b) => b.toString(16).padStart(2, '0')));
    const run = spawnSync('sg_raw', args, { encoding: 'utf8', timeout: 60_000 });
    const text = `${run.stdout ?? ''}\n${run.stderr ?? ''}`;
    const data = existsSync(outFile) ? readFileSync(outFile) : Buffer.alloc(0);
    rmSync(outFile, { force: true });
    rmSync(inFile, { force: true });
    const statusName = /SCSI Status: ([A-Za-z ]+?)\s*$/m.exec(text)?.[1]?.toLowerCase();
    const status = statusName === undefined ? undefined : STATUS_NAMES[statusName];
    if (status === undefined) {
      return Promise.resolve({ response: -1, status: -1, sense: Buffer.alloc(0), data, error: `sg_raw exit ${run.status ?? run.signal}: ${text.slice(0, 400)}` });
    }
    return Promise.resolve({ response: 0, status, sense: rawSense(text), data });
  }
}

/** The bytes after sg_raw -v's "Raw sense data (in hex)" line. */
function rawSense(text: string): Buffer {
  const at = text.indexOf('Raw sense data');
  if (at < 0) return Buffer.alloc(0);
  const bytes: number[] = [];
  for (const line of text.slice(at).split('\n').slice(1)) {
    if (!/^\s+([0-9a-f]{2}\s+)*[0-9a-f]{2}\s*$/.test(line)) break;
    for (const h of line.trim().split(/\s+/)) bytes.push(parseInt(h, 16));
  }
  return Buffer.from(bytes);
}

function sh(command: string): { code: number | null; output: string } {
  const r = spawnSync('/bin/sh', ['-c', command], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, output: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

/** Runs one section, recording its result or its error. */
async function section<T>(results: Record<string, unknown>, timings: Record<string, number>, name: string, body: () => Promise<T>): Promise<T | undefined> {
  const started = Date.now();
  try {
    const value = await body();
    results[name] = value;
    return value;
  } catch (error) {
    results[name] = { error: (error as Error).stack ?? String(error) };
    return undefined;
  } finally {
    timings[name] = Date.now() - started;
  }
}

async function main(): Promise<void> {
  const devicesFile = process.argv[2];
  if (!devicesFile) throw new Error('usage: in-guest.ts DEVICES.json');
  const devices = JSON.parse(readFileSync(devicesFile, 'utf8')) as GuestDevices;
  rmSync(WORK, { recursive: true, force: true });
  mkdirSync(WORK, { recursive: true });
  const results: Record<string, unknown> = {};
  const timings: Record<string, number> = {};
  const started = Date.now();

  // The LIO LUN by its by-id link; whichever nexus udev pointed it at is the
  // engine's initiator, the other one is the second initiator.
  const lioLink = Object.keys(devices.byId).find((l) => /\/scsi-3/.test(l) && [devices.lioA.block, devices.lioB.block].includes(devices.byId[l]!));
  if (!lioLink) throw new Error(`no /dev/disk/by-id/scsi-3* link to ${devices.lioA.block} or ${devices.lioB.block}`);
  const lioBlock = realpathSync(lioLink);
  const [lioMine, lioOther] = lioBlock === devices.lioA.block ? [devices.lioA, devices.lioB] : [devices.lioB, devices.lioA];
  results.layout = { lioLink, lioEngine: lioMine, lioOther, scsiDebug: devices.scsiDebug };

  const engine = createEngine(pino({ level: process.env.VHBA_TEST_LOG ?? 'warn' }, pino.destination(2)));
  const socketPath = join(WORK, 'vm', 'hba0.sock');
  const policy = { rawio: false, timeoutMs: 10_000 };
  await section(results, timings, 'attach', async () => {
    await engine.createController({ id: 'pt', socketPath });
    await engine.attachLun('pt', {
      target: 0, lun: 0,
      backing: { kind: 'file', path: join(WORK, 'emulated.img'), sizeBytes: 4 << 20 },
      params: { logicalBlockSize: 512, physicalBlockSize: 4096, serial: 'VHBAPTEMU0', wwn: '5000c50000000e01', readOnly: false },
    });
    const scsiDebug = await engine.attachLun('pt', { target: 0, lun: 1, backing: { kind: 'hostDevice', path: devices.scsiDebug.sg, policy: { rawio: false, timeoutMs: SCSI_DEBUG_TIMEOUT_MS } } });
    const lio = await engine.attachLun('pt', { target: 0, lun: 2, backing: { kind: 'hostDevice', path: lioLink, policy } });
    return { scsiDebug, lio };
  });

  const frontend = TestFrontend.connect(socketPath);
  await frontend.setup({ memoryBytes: 256 << 20 });
  const emulated = new VhbaPath(frontend, 0, 0);
  const sdebug = new VhbaPath(frontend, 0, 1);
  const lio = new VhbaPath(frontend, 0, 2);
  const sdebugDirect = new SgRawPath(devices.scsiDebug.sg);
  const lioDirect = new SgRawPath(lioMine.sg);
  const lioSecond = new SgRawPath(lioOther.sg);

  await section(results, timings, 'identityScsiDebug', () => compareIdentity(sdebug, sdebugDirect));
  await section(results, timings, 'identityLio', () => compareIdentity(lio, lioDirect));
  await section(results, timings, 'roundTripScsiDebug', () => roundTrip(sdebug, sdebugDirect, BLOCK, 16, 16));
  // Read back through the other nexus: the same LUN, another initiator.
  await section(results, timings, 'roundTripLio', () => roundTrip(lio, lioSecond, BLOCK, 16, 16));
  await section(results, timings, 'persistentReserve', () => persistentReserve(lio, lioSecond, BLOCK, 0x7668626100000001n));
  await section(results, timings, 'refused', () => refusedOpcode(sdebug, sdebugDirect));
  await section(results, timings, 'timeout', async () => {
    // scsi_debug ignores every command (opts SDEBUG_OPT_TIMEOUT = 4 with
    // every_nth 1): the SG_IO timeout must end the command, as ABORTED.
    const armed = sh(`echo 1 > ${SCSI_DEBUG_SYSFS}/every_nth && echo 4 > ${SCSI_DEBUG_SYSFS}/opts`);
    const t = Date.now();
    const stuck = await sdebug.once(rw10(0x28, 0, 1), { dataInLength: BLOCK, timeoutMs: 60_000 });
    const ms = Date.now() - t;
    const disarmed = sh(`echo 0 > ${SCSI_DEBUG_SYSFS}/opts && echo 0 > ${SCSI_DEBUG_SYSFS}/every_nth`);
    const after = await sdebug.execute(rw10(0x28, 0, 1), { dataInLength: BLOCK });
    return { timeoutMs: SCSI_DEBUG_TIMEOUT_MS, armed, disarmed, stuck: describeOutcome(stuck), ms, after: describeOutcome(after) };
  });
  await section(results, timings, 'removal', async () => {
    // Slow the device down (scsi_debug's delay, in jiffies) so reads are in
    // flight at the device when it goes.
    const delayFile = `${SCSI_DEBUG_SYSFS}/delay`;
    const delaySet = sh(`echo 5 > ${delayFile} && cat ${delayFile}`);
    const deleteFile = `/sys/block/${devices.scsiDebug.block.replace('/dev/', '')}/device/delete`;
    let deleteResult: { code: number | null; output: string } = { code: null, output: '' };
    const check = await removalUnderLoad({
      vhba: sdebug, blockSize: BLOCK, readers: 4, warmupMs: 1500, deadlineMs: 30_000,
      remove: async () => {
        deleteResult = sh(`echo 1 > ${deleteFile}`);
      },
      others: { emulated: { path: emulated, blockSize: 512 }, lio: { path: lio, blockSize: BLOCK } },
    });
    return { ...check, delay: delaySet, deleteResult, deviceGone: !existsSync(devices.scsiDebug.sg) };
  });
  await section(results, timings, 'luns', async () => engine.list().flatMap((c) => c.luns));
  await section(results, timings, 'close', async () => {
    frontend.close();
    await Promise.race([engine.close(), new Promise((_, reject) => setTimeout(() => reject(new Error('engine.close() took over 30 s')), 30_000))]);
    return 'closed';
  });
  timings.total = Date.now() - started;
  process.stdout.write(`VHBA-PT-RESULT-BEGIN\n${JSON.stringify({ ...results, timings }, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}\nVHBA-PT-RESULT-END\n`);
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stdout.write(`VHBA-PT-RESULT-BEGIN\n${JSON.stringify({ fatal: (error as Error).stack ?? String(error) })}\nVHBA-PT-RESULT-END\n`);
    process.exit(1);
  },
);
