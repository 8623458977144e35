import { describe, expect, it } from 'vitest';
import { OperatorMetrics, parseListenAddress, startProbeServer } from './metrics.ts';

describe('OperatorMetrics', () => {
  it('renders counters, a histogram and gauges in the Prometheus text format', () => {
    const m = new OperatorMetrics();
    m.observeReconcile('success', 0.02);
    m.observeReconcile('error', 3);
    m.observeActions('createClaim', 2);
    m.disksByPhase = () => new Map([['Assigned', 5], ['Failed', 1]]);
    const text = m.render();
    expect(text).toContain('# TYPE vhba_operator_reconcile_total counter');
    expect(text).toContain('vhba_operator_reconcile_total{result="success"} 1');
    expect(text).toContain('vhba_operator_reconcile_duration_seconds_bucket{le="0.025"} 1');
    expect(text).toContain('vhba_operator_reconcile_duration_seconds_bucket{le="5"} 2');
    expect(text).toContain('vhba_operator_reconcile_duration_seconds_bucket{le="+Inf"} 2');
    expect(text).toContain('vhba_operator_reconcile_duration_seconds_count 2');
    expect(text).toContain('vhba_operator_actions_total{kind="createClaim"} 2');
    expect(text).toContain('vhba_operator_disks{phase="Failed"} 1');
    for (const line of text.trim().split('\n')) expect(line).toMatch(/^(# (HELP|TYPE) \w+ .+|\w+(\{[^}]*\})? [0-9.e+-]+)$/);
  });

  it('serves /metrics, /healthz and /readyz', async () => {
    let ready = false;
    const probes = await startProbeServer('127.0.0.1:0', new OperatorMetrics(), () => ready);
    try {
      const get = async (path: string) => (await fetch(`http://127.0.0.1:${probes.port}${path}`)).status;
      expect(await get('/healthz')).toBe(200);
      expect(await get('/readyz')).toBe(503);
      ready = true;
      expect(await get('/readyz')).toBe(200);
      expect(await get('/metrics')).toBe(200);
      expect(await get('/nope')).toBe(404);
    } finally {
      await probes.close();
    }
  });

  it('parses listen addresses', () => {
    expect(parseListenAddress(':8080')).toEqual({ host: undefined, port: 8080 });
    expect(parseListenAddress('127.0.0.1:0')).toEqual({ host: '127.0.0.1', port: 0 });
    expect(parseListenAddress('[::1]:9')).toEqual({ host: '::1', port: 9 });
    expect(() => parseListenAddress('8080')).toThrow();
  });
});
