// The official supabase-js client, unmodified, against auth-ext-server. Run by
// tests/client/test_http_clients.py, which starts the server and passes:
// AUTH_URL (the server), ANON_KEY, SERVICE_KEY, ADMIN_DSN (a superuser, to read the outbox).
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '@supabase/supabase-js';
import pg from 'pg';
// Node.js 20 has no WebSocket of its own: supabase-js's realtime client needs one given.
import ws from 'ws';
import { client, memoryStorage } from './client.js';
// An independent TOTP implementation, for the MFA codes.
import otplib from 'otplib';

const { authenticator } = otplib;

const { AUTH_URL, ANON_KEY, SERVICE_KEY, ADMIN_DSN } = process.env;
const db = new pg.Client({ connectionString: ADMIN_DSN });
const run = Math.random().toString(36).slice(2, 8);
const email = (name) => `${name}-${run}@example.com`;
const PASSWORD = 'correct horse battery staple';

const admin = createClient(AUTH_URL, SERVICE_KEY, {
  realtime: { transport: ws },
  auth: { persistSession: false, autoRefreshToken: false },
}).auth.admin;

async function lastMessage(address) {
  const r = await db.query(
    'select message from auth.email_outbox where recipient = $1 order by id desc limit 1',
    [address],
  );
  assert.ok(r.rows.length, `a message to ${address}`);
  return r.rows[0].message.email_data;
}

function assertError(error, status, code) {
  assert.ok(error, `an error ${code} was expected`);
  assert.equal(error.status, status, `status of ${code}: ${error.message}`);
  assert.equal(error.code, code);
}

before(async () => db.connect());
after(async () => db.end());

describe('sign-up and sign-in', () => {
  test('signUp returns a session, a second signUp of the address is refused', async () => {
    const sb = client();
    const address = email('ann');
    const { data, error } = await sb.auth.signUp({
      email: address,
      password: PASSWORD,
      options: { data: { name: 'Ann' } },
    });
    assert.equal(error, null);
    assert.ok(data.session.access_token);
    assert.ok(data.session.refresh_token);
    assert.equal(data.user.email, address);
    assert.equal(data.user.user_metadata.name, 'Ann');
    const again = await client().auth.signUp({ email: address, password: PASSWORD });
    assertError(again.error, 422, 'user_already_exists');
  });

  test('signUp with a weak password is AuthWeakPasswordError', async () => {
    const { error } = await client().auth.signUp({ email: email('weak'), password: 'abc' });
    assertError(error, 422, 'weak_password');
    assert.equal(error.name, 'AuthWeakPasswordError');
    assert.ok(error.reasons.length > 0);
  });

  test('signUp with a malformed address is validation_failed', async () => {
    const { error } = await client().auth.signUp({ email: 'not an address', password: PASSWORD });
    assertError(error, 400, 'validation_failed');
  });

  test('signInWithPassword, and one error for a wrong password and an unknown address', async () => {
    const address = email('bob');
    await client().auth.signUp({ email: address, password: PASSWORD });
    const sb = client();
    const { data, error } = await sb.auth.signInWithPassword({ email: address, password: PASSWORD });
    assert.equal(error, null);
    assert.equal(data.user.email, address);
    assert.equal(data.session.token_type, 'bearer');
    const wrong = await client().auth.signInWithPassword({ email: address, password: 'wrong password!' });
    assertError(wrong.error, 400, 'invalid_credentials');
    const unknown = await client().auth.signInWithPassword({ email: email('nobody'), password: PASSWORD });
    assertError(unknown.error, 400, 'invalid_credentials');
    assert.equal(unknown.error.message, wrong.error.message);
  });

  test('signInAnonymously', async () => {
    const { data, error } = await client().auth.signInAnonymously({ options: { data: { guest: true } } });
    assert.equal(error, null);
    assert.equal(data.user.is_anonymous, true);
    assert.equal(data.user.user_metadata.guest, true);
  });

  test('signInWithIdToken with a registered provider, and a wrong nonce', async () => {
    const { generateKeyPairSync, sign, createHash } = await import('node:crypto');
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwk = { ...publicKey.export({ format: 'jwk' }), kid: `google-${run}`, alg: 'ES256', use: 'sig' };
    await db.query(
      "select auth.set_trusted_issuer('https://accounts.google.com', $1::jsonb, '{my-client-id}')",
      [JSON.stringify({ keys: [jwk] })],
    );
    try {
      const now = Math.floor(Date.now() / 1000);
      const nonce = `raw-nonce-${run}`;
      const claims = {
        iss: 'https://accounts.google.com', aud: 'my-client-id', sub: `google-${run}`,
        email: email('gwen'), email_verified: true, iat: now, exp: now + 600,
        nonce: createHash('sha256').update(nonce).digest('hex'),
      };
      const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
      const input = `${part({ alg: 'ES256', typ: 'JWT', kid: jwk.kid })}.${part(claims)}`;
      const signature = sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' });
      const token = `${input}.${signature.toString('base64url')}`;
      const { data, error } = await client().auth.signInWithIdToken({ provider: 'google', token, nonce });
      assert.equal(error, null);
      assert.equal(data.user.email, claims.email);
      assert.equal(data.user.app_metadata.provider, 'google');
      const wrong = await client().auth.signInWithIdToken({ provider: 'google', token, nonce: 'another' });
      assert.ok(wrong.error);
      assert.equal(wrong.error.code, 'bad_jwt');
    } finally {
      await db.query("select auth.drop_trusted_issuer('https://accounts.google.com')");
    }
  });

  test('signInWithIdToken with a provider that is not registered is refused', async () => {
    const { error } = await client().auth.signInWithIdToken({ provider: 'google', token: 'x.y.z' });
    assert.ok(error);
    assert.ok(error.status >= 400 && error.status < 500, `status ${error.status}`);
  });
});

describe('sessions', () => {
  let address;
  before(async () => {
    address = email('carol');
    await client().auth.signUp({ email: address, password: PASSWORD });
  });

  test('getUser, setSession, refreshSession', async () => {
    const sb = client();
    const { data: signIn } = await sb.auth.signInWithPassword({ email: address, password: PASSWORD });
    const { data: got, error } = await sb.auth.getUser();
    assert.equal(error, null);
    assert.equal(got.user.id, signIn.user.id);

    const other = client();
    const set = await other.auth.setSession({
      access_token: signIn.session.access_token,
      refresh_token: signIn.session.refresh_token,
    });
    assert.equal(set.error, null);
    assert.equal(set.data.user.id, signIn.user.id);

    const refreshed = await other.auth.refreshSession();
    assert.equal(refreshed.error, null);
    assert.notEqual(refreshed.data.session.refresh_token, signIn.session.refresh_token);
    assert.equal(refreshed.data.user.id, signIn.user.id);
  });

  test('a refresh token that does not exist', async () => {
    const { error } = await client().auth.refreshSession({ refresh_token: 'no-such-token-1234' });
    assertError(error, 400, 'refresh_token_not_found');
  });

  test('an expired access token is refreshed on its own', async () => {
    const sb = client({ persistSession: true, storage: memoryStorage() });
    const { data } = await sb.auth.signInWithPassword({ email: address, password: PASSWORD });
    // The same claims, expired ten seconds ago, signed with the database's key.
    const claims = JSON.parse(Buffer.from(data.session.access_token.split('.')[1], 'base64url'));
    claims.exp = Math.floor(Date.now() / 1000) - 10;
    const expired = (await db.query('select auth.sign_jwt($1::jsonb) as t', [JSON.stringify(claims)])).rows[0].t;
    const set = await sb.auth.setSession({ access_token: expired, refresh_token: data.session.refresh_token });
    assert.equal(set.error, null);
    assert.notEqual(set.data.session.refresh_token, data.session.refresh_token);
    assert.notEqual(set.data.session.access_token, expired);
    const { data: now } = await sb.auth.getSession();
    assert.equal(now.session.access_token, set.data.session.access_token);
  });

  test('getUser with a forged token is refused', async () => {
    const sb = client();
    const { data } = await sb.auth.signInWithPassword({ email: address, password: PASSWORD });
    const [h, p] = data.session.access_token.split('.');
    const { error } = await sb.auth.getUser(`${h}.${p}.AAAA`);
    assertError(error, 403, 'bad_jwt');
  });

  test('getClaims', async () => {
    const sb = client();
    const { data } = await sb.auth.signInWithPassword({ email: address, password: PASSWORD });
    const claims = await sb.auth.getClaims(data.session.access_token);
    assert.equal(claims.error, null);
    assert.equal(claims.data.claims.sub, data.user.id);
    assert.equal(claims.data.claims.role, 'authenticated');
  });

  test('signOut with each scope', async () => {
    const one = client({ persistSession: true, storage: memoryStorage() });
    const two = client({ persistSession: true, storage: memoryStorage() });
    const three = client({ persistSession: true, storage: memoryStorage() });
    await one.auth.signInWithPassword({ email: address, password: PASSWORD });
    const s2 = (await two.auth.signInWithPassword({ email: address, password: PASSWORD })).data.session;
    const s3 = (await three.auth.signInWithPassword({ email: address, password: PASSWORD })).data.session;

    assert.equal((await one.auth.signOut({ scope: 'others' })).error, null);
    const ended = (await client().auth.refreshSession({ refresh_token: s2.refresh_token })).error;
    assert.ok(ended && [400, 403].includes(ended.status), `refresh after sign-out: ${ended?.status}`);
    assert.equal((await one.auth.getUser()).error, null);

    assert.equal((await one.auth.signOut({ scope: 'local' })).error, null);
    assert.equal((await one.auth.getSession()).data.session, null);

    const four = client({ persistSession: true, storage: memoryStorage() });
    const s4 = (await four.auth.signInWithPassword({ email: address, password: PASSWORD })).data.session;
    assert.equal((await four.auth.signOut()).error, null);
    const gone = await client().auth.refreshSession({ refresh_token: s4.refresh_token });
    assert.ok(gone.error);
    assert.ok(s3);
  });
});

describe('account flows', () => {
  test('updateUser: metadata, the same password, a new password', async () => {
    const address = email('dave');
    const sb = client({ persistSession: true, storage: memoryStorage() });
    await sb.auth.signUp({ email: address, password: PASSWORD });
    const meta = await sb.auth.updateUser({ data: { theme: 'dark' } });
    assert.equal(meta.error, null);
    assert.equal(meta.data.user.user_metadata.theme, 'dark');
    const same = await sb.auth.updateUser({ password: PASSWORD });
    assertError(same.error, 422, 'same_password');
    const changed = await sb.auth.updateUser({ password: 'another good passphrase' });
    assert.equal(changed.error, null);
    const old = await client().auth.signInWithPassword({ email: address, password: PASSWORD });
    assertError(old.error, 400, 'invalid_credentials');
  });

  test('resetPasswordForEmail, then verifyOtp with the code', async () => {
    const address = email('erin');
    await client().auth.signUp({ email: address, password: PASSWORD });
    const { error } = await client().auth.resetPasswordForEmail(address, {
      redirectTo: 'http://localhost:3000/reset',
    });
    assert.equal(error, null);
    const unknown = await client().auth.resetPasswordForEmail(email('nobody'));
    assert.equal(unknown.error, null);
    const message = await lastMessage(address);
    const wrong = await client().auth.verifyOtp({ email: address, token: '000000', type: 'recovery' });
    if (message.token !== '000000') assertError(wrong.error, 403, 'otp_expired');
    const { data, error: verifyError } = await client().auth.verifyOtp({
      email: address,
      token: message.token,
      type: 'recovery',
    });
    assert.equal(verifyError, null);
    assert.equal(data.user.email, address);
    assert.ok(data.session.access_token);
  });

  test('signInWithOtp, then verifyOtp with the link token', async () => {
    const address = email('fay');
    const { error } = await client().auth.signInWithOtp({ email: address });
    assert.equal(error, null);
    const message = await lastMessage(address);
    const { data, error: verifyError } = await client().auth.verifyOtp({
      token_hash: message.token_hash,
      type: 'magiclink',
    });
    assert.equal(verifyError, null);
    assert.equal(data.user.email, address);
  });

  test('signInWithOtp without creating a user answers as for a known address', async () => {
    const { error } = await client().auth.signInWithOtp({
      email: email('ghost'),
      options: { shouldCreateUser: false },
    });
    assert.equal(error, null);
  });

  test('resend', async () => {
    const address = email('gus');
    await client().auth.signUp({ email: address, password: PASSWORD });
    const { error } = await client().auth.resend({ type: 'signup', email: address });
    assert.equal(error, null);
    const bad = await client().auth.resend({ type: 'nonsense', email: address });
    assertError(bad.error, 400, 'validation_failed');
  });
});

describe('admin', () => {
  test('createUser, getUserById, updateUserById, listUsers, deleteUser', async () => {
    const address = email('hal');
    const created = await admin.createUser({
      email: address,
      password: PASSWORD,
      email_confirm: true,
      user_metadata: { plan: 'pro' },
    });
    assert.equal(created.error, null);
    const id = created.data.user.id;
    const dup = await admin.createUser({ email: address, password: PASSWORD });
    assertError(dup.error, 422, 'email_exists');

    const got = await admin.getUserById(id);
    assert.equal(got.data.user.email, address);
    const missing = await admin.getUserById('00000000-0000-4000-8000-000000000000');
    assertError(missing.error, 404, 'user_not_found');

    const updated = await admin.updateUserById(id, { user_metadata: { plan: 'team' } });
    assert.equal(updated.error, null);
    assert.equal(updated.data.user.user_metadata.plan, 'team');

    const page = await admin.listUsers({ page: 1, perPage: 1 });
    assert.equal(page.error, null);
    assert.equal(page.data.users.length, 1);
    assert.ok(page.data.total >= 2);
    assert.equal(page.data.nextPage, 2);

    const deleted = await admin.deleteUser(id);
    assert.equal(deleted.error, null);
    assertError((await admin.getUserById(id)).error, 404, 'user_not_found');
  });

  test('generateLink and inviteUserByEmail', async () => {
    const address = email('ida');
    const link = await admin.generateLink({
      type: 'signup',
      email: address,
      password: PASSWORD,
      options: { redirectTo: 'http://localhost:3000/welcome' },
    });
    assert.equal(link.error, null);
    assert.match(link.data.properties.action_link, /\?token/);
    assert.match(link.data.properties.action_link, /type=signup/);
    assert.match(link.data.properties.action_link, /redirect_to=/);
    assert.ok(link.data.properties.email_otp);

    const invited = await admin.inviteUserByEmail(email('jo'), { data: { team: 'a' } });
    assert.equal(invited.error, null);
    assert.ok(invited.data.user.invited_at);
  });

  test('the anon key is not an admin', async () => {
    const notAdmin = createClient(AUTH_URL, ANON_KEY, { realtime: { transport: ws }, auth: { persistSession: false } }).auth.admin;
    const { error } = await notAdmin.listUsers();
    assertError(error, 403, 'not_admin');
  });
});

describe('PKCE and JWKS', () => {
  test('a magic link in the PKCE flow: GET /verify redirects with ?code=, exchangeCodeForSession', async () => {
    const address = email('kim');
    const sb = client({ flowType: 'pkce', persistSession: true, storage: memoryStorage() });
    const sent = await sb.auth.signInWithOtp({
      email: address,
      options: { emailRedirectTo: 'http://localhost:3000/callback' },
    });
    assert.equal(sent.error, null);
    const message = await lastMessage(address);
    assert.match(message.token_hash, /^pkce_/);
    const link = new URL(`${AUTH_URL}/auth/v1/verify`);
    link.search = new URLSearchParams({
      token: message.token_hash,
      type: 'magiclink',
      redirect_to: 'http://localhost:3000/callback',
    }).toString();
    const r = await fetch(link, { redirect: 'manual' });
    assert.equal(r.status, 303);
    const location = new URL(r.headers.get('location'));
    assert.equal(location.origin + location.pathname, 'http://localhost:3000/callback');
    const code = location.searchParams.get('code');
    assert.ok(code);
    const { data, error } = await sb.auth.exchangeCodeForSession(code);
    assert.equal(error, null);
    assert.equal(data.user.email, address);
    assert.equal(data.session.user.email, address);
    // The code works once.
    const again = await sb.auth.exchangeCodeForSession(code);
    assert.ok(again.error);
  });

  test('exchangeCodeForSession with an unknown code', async () => {
    const sb = client({ flowType: 'pkce', persistSession: true, storage: memoryStorage() });
    // A verifier must be stored for the client to send the exchange at all.
    await sb.auth.signInWithOtp({ email: email('lou') });
    const { error } = await sb.auth.exchangeCodeForSession('no-such-code');
    assertError(error, 404, 'flow_state_not_found');
  });

  test('getClaims verifies an ES256 token against the JWKS', async () => {
    const before = (await db.query("select kid from auth.signing_keys where state = 'in_use'")).rows[0].kid;
    const key = (await db.query("select auth.create_signing_key('ES256') as k")).rows[0].k;
    await db.query('select auth.promote_signing_key($1)', [key.kid]);
    try {
      const address = email('max');
      const sb = client();
      const { data } = await sb.auth.signUp({ email: address, password: PASSWORD });
      const header = JSON.parse(Buffer.from(data.session.access_token.split('.')[0], 'base64url'));
      assert.equal(header.alg, 'ES256');
      const claims = await sb.auth.getClaims(data.session.access_token);
      assert.equal(claims.error, null);
      assert.equal(claims.data.claims.email, address);
      const jwks = await (await fetch(`${AUTH_URL}/auth/v1/.well-known/jwks.json`)).json();
      assert.ok(jwks.keys.some((k) => k.kid === key.kid && !('d' in k)));
    } finally {
      if (before) await db.query('select auth.promote_signing_key($1)', [before]);
    }
  });
});

describe('MFA', () => {
  async function signedIn(name) {
    const address = email(name);
    const sb = client({ persistSession: true, storage: memoryStorage() });
    await sb.auth.signUp({ email: address, password: PASSWORD });
    return { sb, address };
  }

  test('enroll, challenge, verify: aal2 with amr newest first; listFactors, assurance levels, unenroll', async () => {
    const { sb, address } = await signedIn('mfa');
    const enrolled = await sb.auth.mfa.enroll({ factorType: 'totp', friendlyName: 'phone' });
    assert.equal(enrolled.error, null);
    assert.equal(enrolled.data.type, 'totp');
    assert.match(enrolled.data.totp.uri, /^otpauth:\/\/totp\//);
    assert.match(enrolled.data.totp.qr_code, /^data:image\/svg\+xml;utf-8,/);
    assert.equal(enrolled.data.totp.secret.length, 32);
    const factorId = enrolled.data.id;
    const secret = enrolled.data.totp.secret;

    let aal = await sb.auth.mfa.getAuthenticatorAssuranceLevel();
    assert.equal(aal.data.currentLevel, 'aal1');
    assert.equal(aal.data.nextLevel, 'aal1'); // not verified yet

    const challenge = await sb.auth.mfa.challenge({ factorId });
    assert.equal(challenge.error, null);
    const wrong = await sb.auth.mfa.verify({ factorId, challengeId: challenge.data.id,
      code: authenticator.generate(secret) === '000000' ? '111111' : '000000' });
    assertError(wrong.error, 422, 'mfa_verification_failed');
    const verified = await sb.auth.mfa.verify({ factorId, challengeId: challenge.data.id,
      code: authenticator.generate(secret) });
    assert.equal(verified.error, null);
    const claims = JSON.parse(Buffer.from(verified.data.access_token.split('.')[1], 'base64url'));
    assert.equal(claims.aal, 'aal2');
    assert.deepEqual(claims.amr.map((a) => a.method), ['totp', 'password']);

    aal = await sb.auth.mfa.getAuthenticatorAssuranceLevel();
    assert.equal(aal.data.currentLevel, 'aal2');
    const factors = await sb.auth.mfa.listFactors();
    assert.equal(factors.data.totp.length, 1);
    assert.equal(factors.data.totp[0].id, factorId);

    // The code just used is not accepted again.
    const replay = await sb.auth.mfa.challengeAndVerify({ factorId, code: authenticator.generate(secret) });
    assertError(replay.error, 422, 'mfa_verification_failed');

    // A new aal1 session of the same user is asked for the second factor.
    const other = client({ persistSession: true, storage: memoryStorage() });
    await other.auth.signInWithPassword({ email: address, password: PASSWORD });
    aal = await other.auth.mfa.getAuthenticatorAssuranceLevel();
    assert.equal(aal.data.currentLevel, 'aal1');
    assert.equal(aal.data.nextLevel, 'aal2');
    const blocked = await other.auth.updateUser({ password: 'a brand new passphrase' });
    assertError(blocked.error, 401, 'insufficient_aal');
    const notYet = await other.auth.mfa.unenroll({ factorId });
    assertError(notYet.error, 422, 'insufficient_aal');

    // Refreshing keeps aal2.
    const refreshed = await sb.auth.refreshSession();
    assert.equal(JSON.parse(Buffer.from(refreshed.data.session.access_token.split('.')[1], 'base64url')).aal, 'aal2');

    const removed = await sb.auth.mfa.unenroll({ factorId });
    assert.equal(removed.error, null);
    assert.equal(removed.data.id, factorId);
    const after = await sb.auth.refreshSession();
    assert.equal(JSON.parse(Buffer.from(after.data.session.access_token.split('.')[1], 'base64url')).aal, 'aal1');
  });

  test('a factor that does not exist, and the admin API', async () => {
    const { sb } = await signedIn('mfa-admin');
    const missing = await sb.auth.mfa.challenge({ factorId: '00000000-0000-4000-8000-000000000000' });
    assertError(missing.error, 404, 'mfa_factor_not_found');
    const enrolled = await sb.auth.mfa.enroll({ factorType: 'totp' });
    const { data: { user } } = await sb.auth.getUser();
    const listed = await admin.mfa.listFactors({ userId: user.id });
    assert.equal(listed.error, null);
    assert.equal(listed.data.factors.length, 1);
    const deleted = await admin.mfa.deleteFactor({ userId: user.id, id: enrolled.data.id });
    assert.equal(deleted.error, null);
    assert.equal((await admin.mfa.listFactors({ userId: user.id })).data.factors.length, 0);
  });
});
