-- auth_ext 0.4.0 -> 0.5.0: security round 2.
\echo Use "ALTER EXTENSION auth_ext UPDATE TO '0.5.0'" to load this file. \quit
