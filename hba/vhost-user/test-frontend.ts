// A vhost-user front-end for tests (the part QEMU plays): connects to a
// controller's socket, negotiates, shares the mock driver's memfd as guest
// memory (hba/virtio/mock-driver.ts lays the split virtqueues out in it) and
// submits virtio-scsi requests through it. Also sends arbitrary raw messages,
// for the hostile-input tests. Not production code: the mock memory is a bump
// allocator (size it for the test), completions are polled with the call
// eventfd as a wake-up.
import { native, type UnixConnection } from '../native/index.ts';
import { MockGuestMemory, MockSplitQueue } from '../virtio/mock-driver.ts';
import { FIRST_REQUEST_QUEUE, VirtioFeature } from '../virtio-scsi/config.ts';
import { CMD_REQ_SIZE, CMD_RESP_SIZE, encodeLun } from '../virtio-scsi/framing.ts';
import { encodeBody, encodeRequest, HEADER_SIZE, HeaderFlags, ProtocolFeature, Request, VHOST_USER_F_PROTOCOL_FEATURES } from './protocol.ts';

/** One reply from the back-end. */
export interface Reply {
  request: number;
  flags: number;
  body: Buffer;
}

/** A virtio-scsi command's outcome as the driver sees it. */
export interface CommandOutcome {
  response: number;
  status: number;
  resid: number;
  sense: Buffer;
  dataIn: Buffer;
  /** The used element's len. */
  usedLength: number;
}

/** A test front-end connected to one socket. */
export class TestFrontend {
  readonly connection: UnixConnection;
  /** Resolves with the close reason when the back-end (or we) closed the connection. */
  readonly closed: Promise<string | null>;
  isClosed = false;
  readonly #replies: Reply[] = [];
  readonly #waiters: ((r: Reply | null) => void)[] = [];
  #memory: MockGuestMemory | null = null;
  #queues: MockSplitQueue[] = [];
  readonly #completions = new Map<string, { len: number; data: Buffer }>();

  private constructor(connection: UnixConnection) {
    this.connection = connection;
    let onClosed!: (r: string | null) => void;
    this.closed = new Promise((resolve) => (onClosed = resolve));
    connection.start(
      (msg) => {
        for (const fd of msg.fds) native.closeFd(fd);
        const h = msg.header;
        const reply = { request: h.readUInt32LE(0), flags: h.readUInt32LE(4), body: Buffer.from(msg.body) };
        const w = this.#waiters.shift();
        if (w) w(reply);
        else this.#replies.push(reply);
      },
      (reason) => {
        this.isClosed = true;
        for (const w of this.#waiters.splice(0)) w(null);
        onClosed(reason);
      },
    );
  }

  /** Connects to a back-end's socket. */
  static connect(socketPath: string): TestFrontend {
    return new TestFrontend(native.connectUnix(socketPath));
  }

  /** Sends one request (no waiting). */
  send(request: number, body: Buffer = Buffer.alloc(0), fds: number[] = [], flags: number = HeaderFlags.VERSION): void {
    this.connection.send(encodeRequest(request, body, flags), fds);
  }

  /** Sends raw bytes (hostile tests). */
  sendRaw(data: Buffer, fds: number[] = []): void {
    this.connection.send(data, fds);
  }

  /** Waits for the next reply; null if the connection closed first. */
  nextReply(timeoutMs = 5000): Promise<Reply | null> {
    const queued = this.#replies.shift();
    if (queued) return Promise.resolve(queued);
    if (this.isClosed) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no reply within timeout')), timeoutMs);
      this.#waiters.push((r) => {
        clearTimeout(timer);
        resolve(r);
      });
    });
  }

  /** Sends a request that has a reply (or NEED_REPLY) and returns the reply body. */
  async call(request: number, body: Buffer = Buffer.alloc(0), fds: number[] = [], needReply = false): Promise<Buffer> {
    this.send(request, body, fds, HeaderFlags.VERSION | (needReply ? HeaderFlags.NEED_REPLY : 0));
    const r = await this.nextReply();
    if (!r) throw new Error(`connection closed awaiting reply to request ${request}`);
    if (r.request !== request) throw new Error(`reply to ${r.request}, expected ${request}`);
    return r.body;
  }

  /** Negotiation, memory table and queue setup, as QEMU does it: all queues
   * of a virtio-scsi device with `requestQueues` request queues; `features`
   * adds device feature bits (e.g. VirtioScsiFeature.HOTPLUG) to the ones
   * always acked. */
  async setup(options: { requestQueues?: number; queueSize?: number; memoryBytes?: number; features?: number[] } = {}): Promise<void> {
    const queueSize = options.queueSize ?? 128;
    const numQueues = FIRST_REQUEST_QUEUE + (options.requestQueues ?? 1);
    const offered = (await this.call(Request.GET_FEATURES)).readBigUInt64LE(0);
    let want = (1n << BigInt(VirtioFeature.VERSION_1)) | (1n << BigInt(VirtioFeature.RING_EVENT_IDX)) | (1n << BigInt(VHOST_USER_F_PROTOCOL_FEATURES));
    for (const bit of options.features ?? []) want |= 1n << BigInt(bit);
    if ((offered & want) !== want) throw new Error(`back-end lacks features 0x${(want & ~offered).toString(16)}`);
    const protocol = (await this.call(Request.GET_PROTOCOL_FEATURES)).readBigUInt64LE(0);
    const ack = protocol & ((1n << BigInt(ProtocolFeature.MQ)) | (1n << BigInt(ProtocolFeature.REPLY_ACK)) | (1n << BigInt(ProtocolFeature.CONFIG)));
    await this.call(Request.SET_PROTOCOL_FEATURES, encodeBody.u64(ack), [], true);
    const queues = (await this.call(Request.GET_QUEUE_NUM)).readBigUInt64LE(0);
    if (queues < BigInt(numQueues)) throw new Error(`back-end supports ${queues} queues`);
    await this.call(Request.SET_OWNER, Buffer.alloc(0), [], true);
    await this.call(Request.SET_FEATURES, encodeBody.u64(want), [], true);

    const memory = new MockGuestMemory(native, options.memoryBytes ?? 64 << 20);
    this.#memory = memory;
    const region = { guestPhysAddr: memory.base, size: BigInt(memory.size), userAddr: memory.userAddr(memory.base), mmapOffset: 0n };
    await this.call(Request.SET_MEM_TABLE, encodeBody.memTable([region]), [memory.fd], true);

    for (let q = 0; q < numQueues; q++) {
      const queue = new MockSplitQueue(memory, queueSize);
      this.#queues.push(queue);
      const addr = queue.vringAddr();
      await this.call(Request.SET_VRING_NUM, encodeBody.vringState({ index: q, num: queueSize }), [], true);
      await this.call(Request.SET_VRING_BASE, encodeBody.vringState({ index: q, num: 0 }), [], true);
      await this.call(Request.SET_VRING_ADDR, encodeBody.vringAddr({ index: q, flags: 0, desc: addr.descUserAddr, used: addr.usedUserAddr, avail: addr.availUserAddr, log: 0n }), [], true);
      await this.call(Request.SET_VRING_KICK, encodeBody.u64(BigInt(q)), [queue.kickFd], true);
      await this.call(Request.SET_VRING_CALL, encodeBody.u64(BigInt(q)), [queue.callFd], true);
      await this.call(Request.SET_VRING_ENABLE, encodeBody.vringState({ index: q, num: 1 }), [], true);
    }
  }

  /** The mock driver's queue `index` (for hostile ring tests). */
  queue(index: number): MockSplitQueue {
    const q = this.#queues[index];
    if (!q) throw new Error(`queue ${index} not set up`);
    return q;
  }

  /** Submits a raw chain (readable bytes, then writable capacity) and waits for it. */
  async submit(queue: number, readable: Buffer, writable: number, timeoutMs = 5000): Promise<{ len: number; written: Buffer }> {
    const ring = this.#queues[queue];
    if (!ring) throw new Error(`queue ${queue} not set up`);
    const segments = [];
    if (readable.length > 0) segments.push({ data: readable });
    if (writable > 0) segments.push({ writableLength: writable });
    const head = ring.addChain(segments);
    ring.setUsedEvent(ring.lastUsed); // EVENT_IDX: interrupt on the next used entry
    ring.publishAndKick();
    const used = await this.#waitUsed(queue, ring, head, timeoutMs);
    return { len: used.len, written: used.data };
  }

  async #waitUsed(index: number, ring: MockSplitQueue, head: number, timeoutMs: number): Promise<{ len: number; data: Buffer }> {
    const deadline = Date.now() + timeoutMs;
    const key = `${index}:${head}`;
    for (;;) {
      for (const u of ring.reclaim()) this.#completions.set(`${index}:${u.head}`, u);
      const done = this.#completions.get(key);
      if (done) {
        this.#completions.delete(key);
        return done;
      }
      if (this.isClosed) throw new Error('connection closed while waiting for a completion');
      if (Date.now() > deadline) throw new Error(`no completion of head ${head} on queue ${index}`);
      ring.setUsedEvent(ring.lastUsed);
      await ring.waitForCall(20);
    }
  }

  /** One SCSI command through request queue `queue` (default the first). */
  async command(target: number, lun: number, cdb: number[] | Buffer, options: { dataOut?: Buffer; dataInLength?: number; tag?: bigint; queue?: number; lunField?: Buffer } = {}): Promise<CommandOutcome> {
    const req = Buffer.alloc(CMD_REQ_SIZE);
    (options.lunField ?? encodeLun(target, lun)).copy(req, 0);
    req.writeBigUInt64LE(options.tag ?? 1n, 8);
    Buffer.from(cdb).copy(req, 19);
    const dataInLength = options.dataInLength ?? 0;
    const { len, written } = await this.submit(options.queue ?? FIRST_REQUEST_QUEUE, Buffer.concat([req, options.dataOut ?? Buffer.alloc(0)]), CMD_RESP_SIZE + dataInLength);
    if (written.length < CMD_RESP_SIZE) throw new Error(`response of ${written.length} bytes`);
    const senseLen = Math.min(written.readUInt32LE(0), 96);
    return {
      response: written[11]!,
      status: written[10]!,
      resid: written.readUInt32LE(4),
      sense: Buffer.from(written.subarray(12, 12 + senseLen)),
      dataIn: Buffer.from(written.subarray(CMD_RESP_SIZE)),
      usedLength: len,
    };
  }

  /** Stops a queue as QEMU does on VM stop (GET_VRING_BASE), then starts it
   * again from that base (SET_VRING_BASE + SET_VRING_KICK). Returns the base. */
  async stopAndRestart(queue: number): Promise<number> {
    const ring = this.#queues[queue];
    if (!ring) throw new Error(`queue ${queue} not set up`);
    const reply = await this.call(Request.GET_VRING_BASE, encodeBody.vringState({ index: queue, num: 0 }));
    const base = reply.readUInt32LE(4);
    await this.call(Request.SET_VRING_BASE, encodeBody.vringState({ index: queue, num: base }), [], true);
    await this.call(Request.SET_VRING_KICK, encodeBody.u64(BigInt(queue)), [ring.kickFd], true);
    return base;
  }

  /** Closes the connection and frees the rings' eventfds. */
  close(): void {
    this.connection.close();
    for (const q of this.#queues) q.close();
    this.#queues = [];
    this.#memory?.close();
    this.#memory = null;
  }
}

/** HEADER_SIZE re-exported for hostile tests building raw messages. */
export { HEADER_SIZE };
