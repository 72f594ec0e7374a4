// One app flow through supabase-js; tests/client/test_http.py runs the same flow over SQL and
// compares the two. Prints what an app sees, without the values that differ by nature
// (ids, times, tokens). Env: AUTH_URL, ANON_KEY, FLOW_EMAIL.
import { createClient } from '@supabase/supabase-js';
import ws from 'ws';

const { AUTH_URL, ANON_KEY, FLOW_EMAIL } = process.env;
const sb = createClient(AUTH_URL, ANON_KEY, {
  realtime: { transport: ws },
  auth: { persistSession: false, autoRefreshToken: false },
});
const password = 'correct horse battery staple';
const claims = (token) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url'));

const out = {};
const up = await sb.auth.signUp({ email: FLOW_EMAIL, password, options: { data: { name: 'Flow' } } });
out.sign_up = { user: up.data.user, claims: claims(up.data.session.access_token), error: up.error?.code ?? null };
const again = await sb.auth.signUp({ email: FLOW_EMAIL, password });
out.sign_up_again = again.error?.code ?? null;
const wrong = await sb.auth.signInWithPassword({ email: FLOW_EMAIL, password: 'not the password' });
out.wrong_password = wrong.error?.code ?? null;
const signIn = await sb.auth.signInWithPassword({ email: FLOW_EMAIL, password });
out.sign_in = { user: signIn.data.user, claims: claims(signIn.data.session.access_token) };
out.get_user = (await sb.auth.getUser()).data.user;
out.update_user = (await sb.auth.updateUser({ data: { theme: 'dark' } })).data.user;
out.same_password = (await sb.auth.updateUser({ password })).error?.code ?? null;
const refreshed = await sb.auth.refreshSession();
out.refresh = { user: refreshed.data.user, claims: claims(refreshed.data.session.access_token) };
console.log(JSON.stringify(out));
