import { describe, expect, it } from 'vitest';
import { parseOperatorArgs } from './operator.ts';

describe('parseOperatorArgs', () => {
  it('defaults: all namespaces, :8080, no leader election', () => {
    expect(parseOperatorArgs([], {})).toMatchObject({ namespace: undefined, metricsAddr: ':8080', leaderElect: false, leaseName: 'vhba-operator', leaseNamespace: 'default', storageClass: 'vhba', workers: 4 });
  });

  it('takes every flag; the lease namespace follows POD_NAMESPACE, then --namespace', () => {
    const args = parseOperatorArgs(['--kubeconfig', '/k', '--namespace', 'team', '--metrics-addr', '127.0.0.1:9090', '--leader-elect', '--lease-name', 'l', '--workers', '8'], {});
    expect(args).toMatchObject({ kubeconfig: '/k', namespace: 'team', metricsAddr: '127.0.0.1:9090', leaderElect: true, leaseName: 'l', leaseNamespace: 'team', workers: 8 });
    expect(parseOperatorArgs(['--leader-elect'], { POD_NAMESPACE: 'vhba-system' })).toMatchObject({ leaseNamespace: 'vhba-system' });
  });

  it('refuses bad values naming the flag', () => {
    expect(() => parseOperatorArgs(['--namespace', 'Bad_NS'], {})).toThrow(/--namespace/);
    expect(() => parseOperatorArgs(['--metrics-addr', '8080'], {})).toThrow(/--metrics-addr/);
    expect(() => parseOperatorArgs(['--workers', '0'], {})).toThrow(/--workers/);
    expect(() => parseOperatorArgs(['--frob'], {})).toThrow(/frob/);
  });
});
