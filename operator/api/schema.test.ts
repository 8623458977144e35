import { describe, expect, it } from 'vitest';
import { virtualDiskOpenApiSchema, type OpenApiSchema } from './schema.ts';
import { SPEC_FIELDS } from './validate.ts';
import { LIMITS } from './virtualdisk.ts';

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
    expect(spec?.required).toEqual(['vmName', 'capacity']);
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
});
