// One named regression per vulnerability class of a vhost-user-scsi back-end
// (issue 9). Classes already tested elsewhere are pointed to, not repeated:
// each pointer test fails if the named test disappears or is renamed, so the
// list cannot silently rot. Classes without a test elsewhere are tested here.
// Native fuzz crash inputs live in hba/native/fuzz/crashes/<target>/ and are
// replayed by scripts/fuzz.sh on every run.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { type Rig, setupRig, waitFor } from '../../hba/native/device-harness.ts';
import { makeUnit, run, senseOf } from '../../hba/scsi/testing.ts';
import { Status } from '../../hba/scsi/types.ts';
import { encodeDescriptor } from '../../hba/virtio/mock-driver.ts';
import { DescFlag } from '../../hba/virtio/ring-layout.ts';

const repo = join(dirname(fileURLToPath(import.meta.url)), '../..');

/** Asserts that `file` (repo-relative) still defines a test titled exactly `title`. */
function expectTest(file: string, title: string): void {
  const source = readFileSync(join(repo, file), 'utf8');
  const quoted = [`'${title.replaceAll("'", "\\'")}'`, `"${title}"`, `\`${title}\``];
  expect(quoted.some((q) => source.includes(`it(${q}`)), `${file} › ${title}`).toBe(true);
}

/** class → where it is tested (file, test titles). */
const POINTERS: Record<string, [string, string[]][]> = {
  'descriptor loops and over-long chains': [
    ['hba/native/device-hostile.test.ts', ['descriptor loop', 'chain longer than the queue (every descriptor chained, last back to first)', 'loop inside an indirect table', 'running chain total beyond maxChainBytes']],
  ],
  'zero-length and huge descriptors': [
    ['hba/native/device-hostile.test.ts', ['zero-length descriptor', 'huge length (beyond maxChainBytes)', 'indirect length zero', 'buffer whose address + length overflows 64 bits']],
  ],
  'indirect tables nested or misaligned': [
    ['hba/native/device-hostile.test.ts', ['nested indirect table', 'indirect length not a multiple of 16', 'indirect together with NEXT', 'indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC']],
    // a table at an odd guest address: tested below
  ],
  'avail index jumping ahead': [
    ['hba/native/device-hostile.test.ts', ['avail index jumping more than the queue size ahead', 'avail entry naming a descriptor beyond the queue size', 'chain head made available again while in flight']],
  ],
  'addresses outside or spanning memory regions': [
    ['hba/native/device-hostile.test.ts', ['buffer address outside any region', 'buffer running past the end of memory', 'buffer spanning two regions', 'indirect table outside guest memory', 'rejects ring addresses outside guest memory']],
  ],
  'memory table changed under in-flight I/O': [
    ['hba/native/device.test.ts', ['SET_MEM_TABLE while running re-maps the rings and keeps in-flight chains completable']],
    ['hba/native/device-hostile.test.ts', ['a region whose fd cannot be mapped fails and leaves the old table in place']],
  ],
  'MODE SELECT changing block size': [
    ['hba/scsi/mode.test.ts', ['refuses a block descriptor that changes the block size or capacity', 'validates every page before applying any']],
  ],
  'WRITE SAME / UNMAP with huge counts': [
    ['hba/scsi/unmap.test.ts', ['enforces the descriptor count and total block limits', 'rejects LBA + count overflowing 2^64', 'refuses zero blocks (WSNZ) and counts above MAXIMUM WRITE SAME LENGTH']],
  ],
  'LBA + length overflow at 2^64': [
    ['hba/scsi/read-write.test.ts', ['READ(16) is GOOD exactly when lba + length <= capacity, never wrapping']],
    ['hba/native/fastpath.test.ts', ['answers LBA out of range, without wrapping at 2^64']],
  ],
  'wrong fd counts and sizes on every vhost-user message': [
    ['hba/vhost-user/protocol.test.ts', ['rejects one fd too many', 'rejects one fd too few', 'rejects a header whose size disagrees with the body', 'rejects a truncated body']],
    ['hba/vhost-user/session.test.ts', ['closes every fd when the fd count is wrong', 'closes on an oversized body']],
    ['hba/native/unix-socket.test.ts', ['closes with a reason when a message carries more than 8 fds', 'closes fds of a message that never completed']],
    ['test/fuzz/vhost-user.fuzz.test.ts', ['every known request with a well-formed body decodes with exactly its fd count and no other']],
  ],
  'message floods': [
    ['test/fuzz/vhost-user.fuzz.test.ts', ['a flood of messages after a violation is drained without device calls and with every fd closed']],
    ['hba/vhost-user/engine-roundtrip.test.ts', ['leaks no fds across hostile and well-behaved connections']],
    // a flood of well-formed chains on a live queue: tested below
  ],
};

describe('regression classes (issue 9)', () => {
  for (const [cls, places] of Object.entries(POINTERS)) {
    it(`${cls}: tested in ${places.map(([f]) => f).join(', ')}`, () => {
      for (const [file, titles] of places) for (const title of titles) expectTest(file, title);
    });
  }

  describe('tested here', () => {
    let rig: Rig | undefined;
    afterEach(() => {
      rig?.close();
      rig = undefined;
    });

    it('indirect tables nested or misaligned: a table at an odd guest address is read correctly, byte for byte', async () => {
      rig = await setupRig();
      const data = rig.memory.alloc(8);
      rig.memory.write(data, Buffer.from('misalign'));
      const table = rig.memory.alloc(64) + 1n; // virtio 1.2 §2.7.5.3 sets no alignment for indirect tables
      rig.memory.write(table, encodeDescriptor({ addr: data, len: 8, flags: DescFlag.NEXT, next: 1 }));
      rig.memory.write(table + 16n, encodeDescriptor({ addr: rig.memory.alloc(4), len: 4, flags: DescFlag.WRITE, next: 0 }));
      rig.queue.writeDescriptor(0, { addr: table, len: 32, flags: DescFlag.INDIRECT, next: 0 });
      rig.queue.pushAvail(0);
      rig.queue.publishAndKick();
      await waitFor(() => rig!.chains.length + rig!.errors.length > 0, 3000, 'chain or error');
      expect(rig.errors).toEqual([]);
      expect(rig.chains[0]!.readable.toString()).toBe('misalign');
      expect(rig.chains[0]!.writableLength).toBe(4);
    });

    it('message floods: thousands of chains published at once are each delivered exactly once, in order', async () => {
      rig = await setupRig({ queueSize: 256 });
      const total = 4096;
      const seen: number[] = [];
      let sent = 0;
      while (sent < total) {
        // Fill the ring, kick once, complete everything the device hands out.
        const batch = Math.min(128, total - sent); // two descriptors per chain
        for (let i = 0; i < batch; i++) {
          const payload = Buffer.alloc(4);
          payload.writeUInt32LE(sent + i);
          rig.queue.addChain([{ data: payload }, { writableLength: 1 }]);
        }
        rig.queue.publishAndKick();
        sent += batch;
        await waitFor(() => rig!.chains.length === sent || rig!.errors.length > 0, 5000, `${sent} chains`);
        for (const c of rig.chains.slice(seen.length)) {
          seen.push(c.readable.readUInt32LE(0));
          rig.device.complete(0, c.head, Buffer.from([1]));
        }
        rig.queue.reclaim();
      }
      expect(rig.errors).toEqual([]);
      expect(seen).toEqual([...Array(total).keys()]);
    });

    it('MODE SELECT changing block size: refused, and READ CAPACITY still reports the old geometry', async () => {
      const { lu } = await makeUnit();
      const list = Buffer.alloc(12);
      list[3] = 8; // block descriptor length
      list.writeUIntBE(4096, 9, 3); // block length 4096 on a 512-byte disk
      const r = await run(lu, [0x15, 0x10, 0, 0, list.length, 0], { dataOut: list });
      expect(r.status).toBe(Status.CHECK_CONDITION);
      expect(senseOf(r).key).toBe(0x05); // ILLEGAL REQUEST
      const cap = await run(lu, [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], { dataInCapacity: 8 });
      expect(cap.dataIn!.readUInt32BE(4)).toBe(512);
    });

    it('native fuzz regression inputs are kept per target and replayed by scripts/fuzz.sh', () => {
      const fuzz = join(repo, 'hba/native/fuzz');
      const script = readFileSync(join(repo, 'scripts/fuzz.sh'), 'utf8');
      for (const entry of readdirSync(fuzz).filter((f) => f.endsWith('_fuzz.cc'))) {
        const target = entry.replace(/_fuzz\.cc$/, '');
        expect(script).toContain(`[${target}]=`); // built and run by the script
        expect(statSync(join(fuzz, 'corpus', target)).isDirectory()).toBe(true);
        expect(statSync(join(fuzz, 'crashes', target)).isDirectory()).toBe(true);
      }
      expect(script).toMatch(/-runs=1 "\$\{replay\[@\]\}"/); // crashes and seeds replayed before fuzzing
    });
  });
});
