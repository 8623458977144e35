import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { CRD_PATH } from '../scripts/gen-crd.ts';
import { renderVirtualDiskCrdYaml } from './crd.ts';

describe('VirtualDisk CRD', () => {
  it('the committed file is what the generator writes (run: node scripts/gen-crd.ts)', () => {
    expect(readFileSync(CRD_PATH, 'utf8')).toBe(renderVirtualDiskCrdYaml());
  });

  it('has names, status subresource, printer columns and immutability rules', () => {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- walking parsed YAML
    const crd = parse(renderVirtualDiskCrdYaml()) as { spec: any };
    expect(crd.spec.names).toMatchObject({ kind: 'VirtualDisk', shortNames: ['vdisk'], categories: ['vhba', 'all'] });
    const [version] = crd.spec.versions;
    expect(version).toMatchObject({ name: 'v1alpha1', served: true, storage: true, subresources: { status: {} } });
    expect(version.additionalPrinterColumns.map((c: { name: string }) => c.name)).toEqual(['VM', 'ADDRESS', 'SERIAL', 'CAPACITY', 'PHASE', 'AGE']);
    const spec = version.schema.openAPIV3Schema.properties.spec;
    for (const field of ['vmName', 'serial', 'wwn']) {
      expect(spec.properties[field]['x-kubernetes-validations'].map((r: { rule: string }) => r.rule), field).toContain('self == oldSelf');
    }
    expect(spec.properties.address['x-kubernetes-validations'].map((r: { rule: string }) => r.rule)).toContain('self == oldSelf');
  });
});
