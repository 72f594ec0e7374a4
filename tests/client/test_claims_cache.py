"""The claims cache is per backend and keyed on the setting's value: interleaved requests
on different connections, and on one connection, always see their own claims."""

import json
import uuid

from conftest import api


def uid_in_request(conn, claims):
    with conn.transaction():
        conn.execute(
            "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', %s, true)",
            (json.dumps(claims),),
        )
        return conn.execute("select auth.uid()::text as u, auth.role() as r").fetchone()


def test_interleaved_requests_on_two_connections_see_their_own_claims():
    a, b = api(), api()
    a.autocommit = b.autocommit = True
    try:
        for _ in range(50):
            ua, ub = str(uuid.uuid4()), str(uuid.uuid4())
            assert uid_in_request(a, {"sub": ua, "role": "authenticated"}) == {"u": ua, "r": "authenticated"}
            assert uid_in_request(b, {"sub": ub, "role": "authenticated"}) == {"u": ub, "r": "authenticated"}
            # The same backend, the next request: the previous claims are never reused.
            assert uid_in_request(a, {"sub": ub}) == {"u": ub, "r": None}
            with a.transaction():
                assert a.execute("select auth.uid() as u").fetchone() == {"u": None}
    finally:
        a.close()
        b.close()
