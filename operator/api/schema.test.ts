import { describe, expect, it } from 'vitest';
import { virtualDiskOpenApiSchema, type OpenApiSchema } from './schema.ts';
import { SPEC_FIELDS } from './validate.ts';
import { LIMITS } from './virtualdisk.ts';
import { validateVirtualDisk } from './validate.ts';

function walk(schema: OpenApiSchema, path: string, visit: (s: OpenApiSchema, path: string) => void): void {
  visit(schema, path);
  for (const [name, child] of Object.entries(schema.properties ?? {})) walk(child, `${path}.${name}`, visit);
  if (schema.items !== undefined) walk(schema.items, `${path}[]`, visit);
}

describe('virtualDiskOpenApiSchema', () => {
  it('describes every field', () => {
    const missing: string[] = [];
    walk(virtualDiskOpenApiSchema, '', (s, path) => {
      if (s.description === undefined || s.description.length < 5) missing.push(path || '(root)');
    });
    expect(missing).toEqual([]);
  });

  it('has exactly the spec fields the validator knows', () => {
    const spec = virtualDiskOpenApiSchema.properties?.spec;
    expect(Object.keys(spec?.properties ?? {}).sort()).toEqual([...SPEC_FIELDS].sort());
    expect(spec?.required).toEqual(['vmName']);
  });

  it('carries the shared limits', () => {
    const address = virtualDiskOpenApiSchema.properties?.spec?.properties?.address?.properties;
    expect(address?.target?.maximum).toBe(LIMITS.maxTargets - 1);
    expect(address?.lun?.maximum).toBe(LIMITS.maxLunsPerTarget - 1);
    expect(address?.controller?.maximum).toBe(LIMITS.maxControllersPerVm - 1);
    const serial = virtualDiskOpenApiSchema.properties?.spec?.properties?.serial;
    expect(serial?.maxLength).toBe(20);
    expect(new RegExp(serial?.pattern ?? '').test(' x')).toBe(false);
  });

  it('is plain JSON data (serialisable for CRD generation)', () => {
    expect(JSON.parse(JSON.stringify(virtualDiskOpenApiSchema))).toEqual(virtualDiskOpenApiSchema);
  });

  describe('deviceType lun', () => {
    const spec = virtualDiskOpenApiSchema.properties?.spec;
    const rules = spec?.['x-kubernetes-validations'] ?? [];

    it('has no schema default on the fields a lun disk may not have (a default would trip the rules below for every lun)', () => {
      for (const field of ['capacity', 'readOnly', 'logicalBlockSize', 'physicalBlockSize', 'rawio', 'storageClassName']) {
        expect(spec?.properties?.[field]?.default, field).toBeUndefined();
      }
    });

    it('forbids, by CEL rule with a field path, each field that is the device\'s own', () => {
      for (const field of ['capacity', 'logicalBlockSize', 'physicalBlockSize', 'readOnly', 'storageClassName']) {
        const rule = rules.find((r) => r.fieldPath === `.${field}` && r.rule.startsWith("!(has(self.deviceType) && self.deviceType == 'lun')"));
        expect(rule?.rule, field).toBe(`!(has(self.deviceType) && self.deviceType == 'lun') || !has(self.${field})`);
        expect(rule?.message, field).toMatch(/remove it/);
      }
    });

    it('ties the passthrough sources and rawio to deviceType lun, and capacity to the others', () => {
      const texts = rules.map((r) => r.rule);
      expect(texts).toContain("(has(self.deviceType) && self.deviceType == 'lun') || has(self.capacity)");
      expect(texts).toContain("!(has(self.deviceType) && self.deviceType == 'lun') || (has(self.source) && (has(self.source.hostDevice) || has(self.source.iscsi)))");
      expect(texts).toContain("!(has(self.source) && (has(self.source.hostDevice) || has(self.source.iscsi))) || (has(self.deviceType) && self.deviceType == 'lun')");
      expect(texts).toContain("!has(self.rawio) || (has(self.deviceType) && self.deviceType == 'lun')");
      expect(texts.join('\n')).not.toContain("self.deviceType != 'lun' || (has(self.source) && has(self.source.hostDevice))");
    });

    it('the source patterns agree with the validator', () => {
      const source = spec?.properties?.source?.properties;
      // The CEL rule self.matches('<RE2>'), read back as the regular expression the API server runs.
      const celPattern = (schema: OpenApiSchema | undefined): RegExp => {
        const rule = schema?.['x-kubernetes-validations']?.find((r) => r.rule.startsWith('self.matches('))?.rule ?? "self.matches('x^')";
        return new RegExp(rule.slice("self.matches('".length, -"')".length).replaceAll('\\\\', '\\'));
      };
      const path = celPattern(source?.hostDevice?.properties?.path);
      const portal = celPattern(source?.iscsi?.properties?.portal);
      const iqn = celPattern(source?.iscsi?.properties?.iqn);
      const lunDisk = (src: unknown) => validateVirtualDisk({ apiVersion: 'vhba.io/v1alpha1', kind: 'VirtualDisk', metadata: { name: 'd' }, spec: { vmName: 'vm', deviceType: 'lun', source: src } }).ok;
      for (const p of ['/dev/sdb', '/dev/disk/by-id/wwn-0x5000c500abcdef01', '/dev/../etc/passwd', '/var/x', '/dev/', '/dev/a//b']) {
        expect(path.test(p), p).toBe(lunDisk({ hostDevice: { path: p } }));
      }
      for (const p of ['h', 'h:3260', 'h:0', 'h:65536', '10.0.0.1:3260', '[::1]:3260', '::1', 'a_b']) {
        expect(portal.test(p), p).toBe(lunDisk({ iscsi: { portal: p, iqn: 'iqn.2003-01.org.example', lun: 0 } }));
      }
      for (const n of ['iqn.2003-01.org.example:d1', 'eui.02004567A425678D', 'naa.1234', 'iqn.org.example']) {
        expect(iqn.test(n), n).toBe(lunDisk({ iscsi: { portal: 'h', iqn: n, lun: 0 } }));
      }
      expect(source?.iscsi?.properties?.lun?.maximum).toBe(LIMITS.maxIscsiLun);
      expect(source?.iscsi?.required).toEqual(['portal', 'iqn', 'lun']);
    });
  });
});

