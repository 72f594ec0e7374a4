// supabase-js's provider sign-in (signInWithOAuth, PKCE, linkIdentity, unlinkIdentity)
// against auth-ext-server and the fake providers of tests/client/fake_providers.py. Run by
// tests/client/test_oauth.py, which passes AUTH_URL, ANON_KEY, FAKE_GITHUB, FAKE_OIDC and
// SITE_URL. A browser is played by following the redirects by hand.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { client, memoryStorage } from './client.js';

const { FAKE_GITHUB, FAKE_OIDC, SITE_URL } = process.env;
const run = Math.random().toString(36).slice(2, 8);

function browserClient(options = {}) {
  return client({ persistSession: true, storage: memoryStorage(), ...options });
}

async function control(fake, body) {
  const r = await fetch(`${fake}/_control`, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
  assert.equal(r.status, 200, await r.text());
}

// The browser: follow redirects until they leave for the app (SITE_URL); that URL.
async function browse(url) {
  for (let i = 0; i < 10; i += 1) {
    if (url.startsWith(SITE_URL)) return new URL(url);
    const r = await fetch(url, { redirect: 'manual' });
    assert.ok([302, 303].includes(r.status), `${url}: ${r.status} ${await r.text()}`);
    url = new URL(r.headers.get('location'), url).toString();
  }
  throw new Error('too many redirects');
}

const params = (s) => Object.fromEntries(new URLSearchParams(s));

test('signInWithOAuth (implicit): GitHub, then a session from the fragment', async () => {
  const sb = browserClient();
  await control(FAKE_GITHUB, { user: { id: 91001, login: `js${run}`, name: 'JS', email: `js-gh-${run}@example.com`, email_verified: true } });
  const { data, error } = await sb.auth.signInWithOAuth({
    provider: 'github',
    options: { redirectTo: `${SITE_URL}/cb`, skipBrowserRedirect: true, scopes: 'read:org', queryParams: { allow_signup: 'false' } },
  });
  assert.equal(error, null);
  const authorize = new URL(data.url);
  assert.equal(authorize.pathname, '/auth/v1/authorize');
  const back = await browse(data.url);
  const f = params(back.hash.slice(1));
  assert.ok(f.access_token && f.refresh_token && f.provider_token, back.toString());
  const set = await sb.auth.setSession({ access_token: f.access_token, refresh_token: f.refresh_token });
  assert.equal(set.error, null);
  const { data: u } = await sb.auth.getUser();
  assert.equal(u.user.email, `js-gh-${run}@example.com`);
  assert.equal(u.user.app_metadata.provider, 'github');
  const { data: ids } = await sb.auth.getUserIdentities();
  assert.deepEqual(ids.identities.map((i) => i.provider), ['github']);
});

test('signInWithOAuth (PKCE): an OIDC provider, then exchangeCodeForSession', async () => {
  const sb = browserClient({ flowType: 'pkce' });
  await control(FAKE_OIDC, { user: { sub: `js-oidc-${run}`, email: `js-oidc-${run}@example.com`, email_verified: true, name: 'OIDC JS' } });
  const { data } = await sb.auth.signInWithOAuth({ provider: 'acme', options: { redirectTo: `${SITE_URL}/pkce`, skipBrowserRedirect: true } });
  const q = params(new URL(data.url).search);
  assert.equal(q.code_challenge_method, 's256');
  const back = await browse(data.url);
  const code = back.searchParams.get('code');
  assert.ok(code, back.toString());
  const { data: s, error } = await sb.auth.exchangeCodeForSession(code);
  assert.equal(error, null);
  assert.equal(s.user.email, `js-oidc-${run}@example.com`);
  assert.equal(s.user.identities[0].provider, 'acme');
  // The code worked once.
  const again = await browserClient({ flowType: 'pkce' }).auth.exchangeCodeForSession(code);
  assert.ok(again.error);
});

test('signInWithOAuth: the user denies, the error comes back to the app', async () => {
  const sb = browserClient();
  await control(FAKE_GITHUB, { mode: 'deny' });
  try {
    const { data } = await sb.auth.signInWithOAuth({ provider: 'github', options: { redirectTo: `${SITE_URL}/cb`, skipBrowserRedirect: true } });
    const back = await browse(data.url);
    assert.equal(back.searchParams.get('error'), 'access_denied');
    assert.ok(!back.hash.includes('access_token'));
  } finally {
    await control(FAKE_GITHUB, {});
  }
});

test('linkIdentity and unlinkIdentity', async () => {
  const sb = browserClient();
  const email = `js-link-${run}@example.com`;
  const up = await sb.auth.signUp({ email, password: 'correct horse battery staple' });
  assert.equal(up.error, null);
  await control(FAKE_GITHUB, { user: { id: 91002, login: `jslink${run}`, email: `elsewhere-${run}@example.com`, email_verified: true } });
  const { data, error } = await sb.auth.linkIdentity({ provider: 'github', options: { redirectTo: `${SITE_URL}/linked`, skipBrowserRedirect: true } });
  assert.equal(error, null);
  const back = await browse(data.url);
  const f = params(back.hash.slice(1));
  assert.ok(f.access_token, back.toString());
  await sb.auth.setSession({ access_token: f.access_token, refresh_token: f.refresh_token });
  const { data: ids } = await sb.auth.getUserIdentities();
  assert.deepEqual(ids.identities.map((i) => i.provider).sort(), ['email', 'github']);
  const github = ids.identities.find((i) => i.provider === 'github');
  const un = await sb.auth.unlinkIdentity(github);
  assert.equal(un.error, null);
  const { data: after } = await sb.auth.getUserIdentities();
  assert.deepEqual(after.identities.map((i) => i.provider), ['email']);
  const last = await sb.auth.unlinkIdentity(after.identities[0]);
  assert.equal(last.error.code, 'single_identity_not_deletable');
});
