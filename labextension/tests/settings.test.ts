/** The settings schema (JupyterLab settings registry) matches the panel's defaults. */
import * as fs from 'fs';
import * as path from 'path';
import { DEFAULT_SETTINGS } from '../src/components/context';

const schema = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'schema', 'plugin.json'), 'utf8'));

it('declares every panel setting with the same default', () => {
  const defaults = Object.fromEntries(
    Object.entries(schema.properties as Record<string, { default: unknown }>).map(([k, v]) => [k, v.default])
  );
  expect(defaults).toEqual(DEFAULT_SETTINGS);
  expect(schema.additionalProperties).toBe(false);
  expect(schema.properties.refresh.enum).toEqual(['live', 'poll', 'manual']);
  expect(schema.properties.defaultRunner.enum).toEqual(['subprocess', 'docker', 'kubernetes']);
});
