// Engine metrics (issue 9): the exposition text from Engine.list() and the
// limits, parsed back line by line; the HTTP server on 127.0.0.1:0 in front
// of a real engine with a real controller and LUN.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import type { ControllerInfo } from './engine-api.ts';
import { createEngine } from './engine.ts';
import { renderEngineMetrics, startMetricsServer } from './metrics.ts';
import { DEFAULT_CONTROLLER_LIMITS, type ControllerLimits } from './security.ts';

const logger = pino({ level: 'silent' });
const dir = mkdtempSync(join(tmpdir(), 'vhba-metrics-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Parses exposition text: sample key `name{labels}` → value; checks every
 * sample's family was declared by # HELP and # TYPE before it. */
function parseExposition(text: string): Map<string, number> {
  expect(text.endsWith('\n')).toBe(true);
  const declared = new Map<string, string>();
  const samples = new Map<string, number>();
  for (const line of text.slice(0, -1).split('\n')) {
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (meta) {
      if (meta[1] === 'TYPE') {
        expect(['gauge', 'counter']).toContain(meta[3]);
        declared.set(meta[2]!, meta[3]!);
      }
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)((?:\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*",?)*\})?) (-?[0-9.e+]+)$/.exec(line);
    if (!m) throw new Error(`not an exposition line: ${JSON.stringify(line)}`);
    expect(declared.has(m[1]!), `${m[1]} declared before its samples`).toBe(true);
    const key = `${m[1]}${m[2]}`;
    expect(samples.has(key), `${key} once`).toBe(false);
    samples.set(key, Number(m[3]));
  }
  return samples;
}

const lunInfo = (target: number, lun: number, n: number): ControllerInfo['luns'][number] => ({
  target, lun, backing: { kind: 'memory', sizeBytes: 1 << 20 },
  params: { logicalBlockSize: 512, physicalBlockSize: 512, serial: 'S', wwn: '5000000000000001', readOnly: false },
  reads: n, writes: n + 1, bytesRead: n * 512, bytesWritten: (n + 1) * 4096,
});

describe('renderEngineMetrics', () => {
  it('reports per controller state and limits and per LUN counters with controller/target/lun labels', () => {
    const limits: ControllerLimits = { maxRequestQueues: 4, maxQueueSize: 256, maxMemoryRegions: 8, maxLuns: 32 };
    const text = renderEngineMetrics([
      { id: 'default/vm1/hba0', socketPath: '/s/a', numRequestQueues: 2, connected: true, luns: [lunInfo(0, 0, 3), lunInfo(1, 7, 10)],
        requestQueues: [{ queue: 2, commands: 40, inFlight: 1, availIndex: 40 }, { queue: 3, commands: 5, inFlight: 0, availIndex: 9 }] },
      { id: 'ns/we"ird\\id\n', socketPath: '/s/b', numRequestQueues: 1, connected: false, luns: [] },
    ], limits);
    const s = parseExposition(text);
    const a = 'controller="default/vm1/hba0"';
    const b = 'controller="ns/we\\"ird\\\\id\\n"';
    expect(s.get('vhba_engine_controllers')).toBe(2);
    expect(s.get(`vhba_controller_connected{${a}}`)).toBe(1);
    expect(s.get(`vhba_controller_connected{${b}}`)).toBe(0);
    expect(s.get(`vhba_controller_luns{${a}}`)).toBe(2);
    expect(s.get(`vhba_controller_luns{${b}}`)).toBe(0);
    expect(s.get(`vhba_controller_request_queues{${a}}`)).toBe(2);
    expect(s.get(`vhba_controller_limit_request_queues{${b}}`)).toBe(4);
    expect(s.get(`vhba_controller_limit_queue_size{${a}}`)).toBe(256);
    expect(s.get(`vhba_controller_limit_memory_regions{${a}}`)).toBe(8);
    expect(s.get(`vhba_controller_limit_luns{${a}}`)).toBe(32);
    expect(s.get(`vhba_controller_limit_in_flight{${a}}`)).toBe((4 + 2) * 256);
    expect(s.get(`vhba_request_queue_commands_total{${a},queue="2"}`)).toBe(40);
    expect(s.get(`vhba_request_queue_in_flight{${a},queue="2"}`)).toBe(1);
    expect(s.get(`vhba_lun_reads_total{${a},target="1",lun="7"}`)).toBe(10);
    expect(s.get(`vhba_lun_writes_total{${a},target="1",lun="7"}`)).toBe(11);
    expect(s.get(`vhba_lun_read_bytes_total{${a},target="0",lun="0"}`)).toBe(3 * 512);
    expect(s.get(`vhba_lun_written_bytes_total{${a},target="0",lun="0"}`)).toBe(4 * 4096);
    expect([...s.keys()].filter((k) => k.startsWith('vhba_lun_reads_total'))).toHaveLength(2);
  });

  it('with no controllers: the families, a zero count, no samples', () => {
    const s = parseExposition(renderEngineMetrics([], DEFAULT_CONTROLLER_LIMITS));
    expect([...s]).toEqual([['vhba_engine_controllers', 0]]);
  });
});

describe('startMetricsServer', () => {
  it('serves /metrics of a real engine and /healthz on 127.0.0.1:0; 404 and 405 otherwise', async () => {
    const engine = createEngine(logger);
    const server = await startMetricsServer({ host: '127.0.0.1', port: 0 }, engine, DEFAULT_CONTROLLER_LIMITS, logger);
    try {
      expect(server.port).toBeGreaterThan(0);
      await engine.createController({ id: 'default/vm1/hba0', socketPath: join(dir, 'vm1', 'hba0.sock'), numRequestQueues: 2 });
      await engine.attachLun('default/vm1/hba0', { target: 0, lun: 3, backing: { kind: 'memory', sizeBytes: 1 << 20 }, params: lunInfo(0, 3, 0).params });
      const url = `http://127.0.0.1:${server.port}`;
      const res = await fetch(`${url}/metrics`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
      const s = parseExposition(await res.text());
      const c = 'controller="default/vm1/hba0"';
      expect(s.get('vhba_engine_controllers')).toBe(1);
      expect(s.get(`vhba_controller_connected{${c}}`)).toBe(0);
      expect(s.get(`vhba_controller_luns{${c}}`)).toBe(1);
      expect(s.get(`vhba_controller_request_queues{${c}}`)).toBe(2);
      expect(s.get(`vhba_controller_limit_luns{${c}}`)).toBe(DEFAULT_CONTROLLER_LIMITS.maxLuns);
      expect(s.get(`vhba_lun_reads_total{${c},target="0",lun="3"}`)).toBe(0);
      expect(s.get(`vhba_lun_written_bytes_total{${c},target="0",lun="3"}`)).toBe(0);
      const health = await fetch(`${url}/healthz`);
      expect([health.status, await health.text()]).toEqual([200, 'ok\n']);
      expect((await fetch(`${url}/nope`)).status).toBe(404);
      expect((await fetch(`${url}/metrics`, { method: 'POST' })).status).toBe(405);
    } finally {
      await server.close();
      await engine.close();
    }
  });
});
