// An unmodified supabase-js app against auth-ext-server. The demo prints how to run it:
//   SUPABASE_URL=http://localhost:9999 SUPABASE_ANON_KEY=<anon key> node examples/supabase-js/quickstart.mjs
import { createClient } from '@supabase/supabase-js';
// Node.js 20 has no WebSocket of its own (22 has): supabase-js's realtime client needs one.
import ws from 'ws';

const supabase = createClient(process.env.SUPABASE_URL, process.env.SUPABASE_ANON_KEY, {
  realtime: { transport: ws },
  auth: { persistSession: false },
});
const email = `ann-${Date.now()}@example.com`;
const password = 'correct horse battery staple';

const { data: signUp, error: signUpError } = await supabase.auth.signUp({ email, password });
if (signUpError) throw signUpError;
console.log('signed up:', signUp.user.email, signUp.user.id);

const { data, error } = await supabase.auth.signInWithPassword({ email, password });
if (error) throw error;
console.log('signed in; access token expires at', new Date(data.session.expires_at * 1000).toISOString());

const { data: me } = await supabase.auth.getUser();
console.log('GET /user says:', me.user.email);

const wrong = await supabase.auth.signInWithPassword({ email, password: 'not the password' });
console.log('a wrong password:', wrong.error.status, wrong.error.code);

await supabase.auth.signOut();
console.log('signed out');
