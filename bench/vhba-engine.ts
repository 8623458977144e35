// The vhba side of `npm run bench`: a process that runs the engine
// (createEngine() from hba/engine.ts) with one controller whose LUNs are the
// bench's tmpfs files, so the benchmark can measure this process's CPU time
// the same way it measures qemu-storage-daemon's.
//
//   node bench/vhba-engine.ts --socket PATH [--queues N] --size BYTES --file F0 [--file F1 ...]
//   node bench/vhba-engine.ts --socket PATH --iscsi-portal HOST:PORT --iscsi-iqn IQN --iscsi-lun N
//
// LUN i (target 0) is backed by the i-th --file; or LUN 0 is an iSCSI
// passthrough LUN (issue 8: the engine's libiscsi path, policy rawio off). Prints one JSON line
// {"ready":true,"pid":...} on stdout once the socket listens; logs go to
// stderr. SIGTERM/SIGINT close the engine and exit 0.
import { parseArgs } from 'node:util';
import pino from 'pino';
import type { Engine } from '../hba/engine-api.ts';

type CreateEngine = (logger?: pino.Logger) => Engine;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      socket: { type: 'string' },
      queues: { type: 'string', default: '1' },
      size: { type: 'string' },
      file: { type: 'string', multiple: true },
      'queue-size': { type: 'string', default: '1024' },
      'iscsi-portal': { type: 'string' },
      'iscsi-iqn': { type: 'string' },
      'iscsi-lun': { type: 'string' },
    },
    strict: true,
  });
  const socketPath = values.socket;
  const files = values.file ?? [];
  const sizeBytes = Number(values.size);
  const portal = values['iscsi-portal'];
  const iqn = values['iscsi-iqn'];
  const iscsiLun = Number(values['iscsi-lun']);
  const iscsi = portal !== undefined || iqn !== undefined || values['iscsi-lun'] !== undefined;
  const filesOk = files.length > 0 && Number.isSafeInteger(sizeBytes) && sizeBytes > 0;
  const iscsiOk = !!portal && !!iqn && Number.isInteger(iscsiLun) && iscsiLun >= 0 && files.length === 0;
  if (!socketPath || (iscsi ? !iscsiOk : !filesOk)) {
    throw new Error(
      'usage: vhba-engine.ts --socket PATH [--queues N] (--size BYTES --file F0 [--file F1 ...] | --iscsi-portal HOST:PORT --iscsi-iqn IQN --iscsi-lun N)',
    );
  }
  // Imported by path at run time so this file type-checks before hba/engine.ts exists.
  const enginePath = new URL('../hba/engine.ts', import.meta.url).href;
  const { createEngine } = (await import(enginePath)) as { createEngine: CreateEngine };
  const logger = pino({ level: process.env.VHBA_BENCH_LOG ?? 'warn' }, pino.destination(2));
  const engine = createEngine(logger);
  const id = 'bench/vm/hba0';
  await engine.createController({
    id,
    socketPath,
    numRequestQueues: Number(values.queues),
    maxQueueSize: Number(values['queue-size']),
  });
  if (iscsi) {
    await engine.attachLun(id, { target: 0, lun: 0, backing: { kind: 'iscsi', portal: portal!, iqn: iqn!, lun: iscsiLun, policy: { rawio: false } } });
  }
  for (const [lun, path] of files.entries()) {
    await engine.attachLun(id, {
      target: 0,
      lun,
      backing: { kind: 'file', path, sizeBytes },
      params: {
        logicalBlockSize: 512,
        physicalBlockSize: 4096,
        serial: `BENCH${String(lun).padStart(4, '0')}`,
        wwn: `5${'0'.repeat(11)}${lun.toString(16).padStart(4, '0')}`,
        readOnly: false,
      },
    });
  }
  let closing = false;
  const stop = (): void => {
    if (closing) return;
    closing = true;
    engine.close().then(
      () => process.exit(0),
      (err: unknown) => {
        console.error('vhba-engine: close failed:', err);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdout.write(JSON.stringify({ ready: true, pid: process.pid, socket: socketPath, luns: iscsi ? 1 : files.length }) + '\n');
}

main().catch((err: unknown) => {
  console.error('vhba-engine:', err instanceof Error ? err.stack ?? err.message : err);
  process.exit(2);
});
