select bench_refresh(:client_id);
