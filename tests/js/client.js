// What the supabase-js tests share: a client of the server under test (AUTH_URL, ANON_KEY)
// as an app makes it, and an in-memory storage for the sessions and PKCE verifiers that a
// browser would keep in localStorage.
import { createClient } from '@supabase/supabase-js';
// Node.js 20 has no WebSocket of its own: supabase-js's realtime client needs one given.
import ws from 'ws';

export function memoryStorage() {
  const m = new Map();
  return {
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => void m.set(k, v),
    removeItem: (k) => void m.delete(k),
  };
}

export function client(options = {}) {
  return createClient(process.env.AUTH_URL, process.env.ANON_KEY, {
    realtime: { transport: ws },
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false, ...options },
  });
}
