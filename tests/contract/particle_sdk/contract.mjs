// Particle's official JS SDK (particle-api-js, pinned in package.json) run against a Particle Cloud
// simulator: every operation Tokenflow uses, each answer recorded as the SDK hands it to its caller.
//
//   node contract.mjs CONFIG_JSON
//
// CONFIG_JSON: {"url", "token", "product", "productId", "org", "ledger", "devices": [ids],
// "idPart", "name", "groups": [..]}. Prints one JSON object: call name -> {statusCode, body} for a
// resolved call, {error: true, statusCode, body, shortErrorDescription, retryAfter, contentType}
// for a rejected one. It asserts nothing itself: tests/contract/test_particle_sdk.py does, so a
// difference reads as a named pytest failure.
import Particle from 'particle-api-js';

const config = JSON.parse(process.argv[2]);
const { url, token, product, productId, org, ledger, devices, idPart, name, groups } = config;

// The constructor's `auth` is sent as "Authorization: Bearer <token>" on every call
// (particle-api-js Agent._getAuthorizationHeader).
const api = new Particle({ baseUrl: url, auth: token });
const wrongToken = new Particle({ baseUrl: url, auth: 'not-the-token' });
const out = {};

// A rejected call: particle-api-js Agent._promiseResponse parses the error body as JSON (Particle's
// API "always replies with JSON", docs.particle.io/reference/cloud-apis/api, "Format") and rejects
// with {statusCode, errorDescription, shortErrorDescription (the body's error_description), body}.
// A body that is not JSON would surface as a SyntaxError instead: recorded as bodyIsJson false.
function rejected(err) {
  const { response, ...body } = err.body && typeof err.body === 'object' ? err.body : {};
  const headers = response && response.headers;
  return {
    error: true,
    statusCode: err.statusCode ?? null,
    body,
    bodyIsJson: !(err.error instanceof SyntaxError),
    shortErrorDescription: err.shortErrorDescription ?? null,
    retryAfter: headers ? headers.get('retry-after') : null,
    contentType: headers ? headers.get('content-type') : null,
  };
}

async function call(label, fn) {
  try {
    const { statusCode, body } = await fn();
    out[label] = { statusCode, body };
  } catch (err) {
    out[label] = rejected(err);
  }
}

async function simControl(path, body) {
  const answer = await fetch(`${url}/_sim/${path}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (!answer.ok) throw new Error(`simulator control ${path}: ${answer.status}`);
}

// ---- product devices: paging, filters, lookup ----------------------------------------------------
for (const page of [1, 2, 3]) {
  await call(`devices.page${page}`, () => api.listDevices({ product, page, perPage: 2 }));
}
await call('devices.all', () => api.listDevices({ product, perPage: 100 }));
await call('devices.byProductId', () => api.listDevices({ product: productId, perPage: 100 }));
await call('devices.deviceId', () => api.listDevices({ product, deviceId: idPart }));
await call('devices.deviceName', () => api.listDevices({ product, deviceName: name }));
await call('devices.groups', () => api.listDevices({ product, groups }));
await call('devices.sortNameDesc', () =>
  api.listDevices({ product, sortAttr: 'deviceName', sortDir: 'desc', perPage: 100 }));
await call('devices.sortIdAsc', () =>
  api.listDevices({ product, sortAttr: 'deviceId', sortDir: 'asc', perPage: 100 }));
await call('device.get', () => api.getDevice({ deviceId: devices[0], product }));
await call('device.getByProductId', () => api.getDevice({ deviceId: devices[0], product: productId }));
await call('device.unknown', () => api.getDevice({ deviceId: '0'.repeat(24), product }));
await call('device.unknownProduct', () => api.getDevice({ deviceId: devices[0], product: 'no-such-product' }));

// ---- Ledger instances, under the sandbox prefix (/v1) and the org prefix (/v1/orgs/{org}) --------
for (const [scope, orgArg] of [['sandbox', undefined], ['org', org]]) {
  const ledgerName = ledger;
  const at = (scopeValue) => ({ ledgerName, scopeValue, org: orgArg });
  const [first, second, third] = devices;
  // No setMode: the SDK sends no set_mode and the documented default is Replace.
  await call(`${scope}.setDefault`, () =>
    api.setLedgerInstance({ ...at(first), instance: { data: { blynk_token: 'first', state: 'active', note: 'x' } } }));
  await call(`${scope}.setMerge`, () =>
    api.setLedgerInstance({ ...at(first), instance: { data: { state: 'revoked' } }, setMode: 'Merge' }));
  await call(`${scope}.getAfterMerge`, () => api.getLedgerInstance(at(first)));
  await call(`${scope}.setReplace`, () =>
    api.setLedgerInstance({ ...at(first), instance: { data: { blynk_token: '', state: 'revoked' } }, setMode: 'Replace' }));
  await call(`${scope}.get`, () => api.getLedgerInstance(at(first)));
  for (const device of [second, third]) {
    await call(`${scope}.set.${device}`, () =>
      api.setLedgerInstance({ ...at(device), instance: { data: { blynk_token: device.slice(-4), state: 'active' } } }));
  }
  await call(`${scope}.list.page1`, () => api.listLedgerInstances({ ledgerName, org: orgArg, page: 1, perPage: 2 }));
  await call(`${scope}.list.page2`, () => api.listLedgerInstances({ ledgerName, org: orgArg, page: 2, perPage: 2 }));
  await call(`${scope}.list.default`, () => api.listLedgerInstances({ ledgerName, org: orgArg }));
  await call(`${scope}.delete`, () => api.deleteLedgerInstance(at(first)));
  await call(`${scope}.getDeleted`, () => api.getLedgerInstance(at(first)));
  await call(`${scope}.deleteAgain`, () => api.deleteLedgerInstance(at(first)));
  await call(`${scope}.unknownDevice`, () =>
    api.setLedgerInstance({ ...at('0'.repeat(24)), instance: { data: { state: 'active' } } }));
}
await call('org.unknownOrg', () =>
  api.getLedgerInstance({ ledgerName: ledger, scopeValue: devices[1], org: 'no-such-org' }));

// ---- 401: a token the cloud does not accept, on every kind of call ------------------------------
await call('401.listDevices', () => wrongToken.listDevices({ product }));
await call('401.getDevice', () => wrongToken.getDevice({ deviceId: devices[0], product }));
await call('401.setLedgerInstance', () =>
  wrongToken.setLedgerInstance({ ledgerName: ledger, scopeValue: devices[1], instance: { data: { state: 'x' } } }));
await call('401.getLedgerInstance', () => wrongToken.getLedgerInstance({ ledgerName: ledger, scopeValue: devices[1], org }));
await call('401.listLedgerInstances', () => wrongToken.listLedgerInstances({ ledgerName: ledger }));
await call('401.deleteLedgerInstance', () => wrongToken.deleteLedgerInstance({ ledgerName: ledger, scopeValue: devices[1] }));

// ---- 429: the rate limit (set through the simulator's own control API) ---------------------------
await simControl('rate-limit', { requests: 1, window_seconds: 60 });
await call('429.first', () => api.listDevices({ product }));
await call('429.listDevices', () => api.listDevices({ product }));
await call('429.setLedgerInstance', () =>
  api.setLedgerInstance({ ledgerName: ledger, scopeValue: devices[1], instance: { data: { state: 'x' } } }));
await simControl('rate-limit', { requests: null });

process.stdout.write(JSON.stringify(out));
