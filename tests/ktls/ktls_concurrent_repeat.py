#!/usr/bin/python3
# Repeats only the 100-connection concurrent kTLS check of ktls_daemon_test.py, KTLS_CONC_ROUNDS
# times (default 3), and prints per round which transfers failed and the odd access lines.
# A reproducer for the intermittent 120 s stall (bench/README.md, "Known problems"):
#   KTLSGATE_UML_SHIM=build/tests/uml_xstate_shim.so KTLSGATE_BIN=$PWD/build/ktlsgate \
#   KTLS_CONC_ROUNDS=5 tests/ktls/run-uml.sh $PWD/tests/ktls/ktls_concurrent_repeat.py
import os, sys, ssl, threading, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ktls_daemon_test as t
rounds = int(os.environ.get("KTLS_CONC_ROUNDS", "3"))
def many(pki, port, log_path, n=5):
    n = 100
    for _ in range(rounds):
        ctx = t.client_ctx(pki, ssl.TLSVersion.TLSv1_3, None)
        results = [None] * n
        def one(i):
            t0 = time.time()
            try:
                results[i] = (t.transfer(ctx, port, 256 << 10)[0], time.time() - t0)
            except Exception as e:
                results[i] = (repr(e), time.time() - t0)
        before = len(t.access_lines(log_path))
        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for th in threads: th.start()
        for th in threads: th.join(130)
        time.sleep(0.3)
        lines = t.access_lines(log_path)[before:]
        ok = [l for l in lines if "path=ktls" in l and "result=ok" in l]
        bad = [r for r in results if r is None or r[0] is not True]
        print(f"round: results_ok={n - len(bad)} bad={bad[:5]} new_access={len(lines)} ktls_ok={len(ok)} maxdur={max(r[1] for r in results if r):.1f}")
        for l in lines:
            if "path=ktls" not in l or "result=ok" not in l or "end=client_eof" not in l:
                print("  odd:", l.strip()[:400])
        t.check(not bad and len(ok) == n, f"{n} concurrent kTLS connections all byte-exact")
t.check_concurrent = many
os.environ["KTLS_ONLY"] = "concurrent"
sys.exit(t.main())
