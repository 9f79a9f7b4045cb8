"""Property-based fuzzing of what the daemon reads from the outside world.

Three targets, each a property checked on inputs that `hypothesis` generates:
- `frame`: the protocol's frame parser and message validation on arbitrary and mutated bytes;
- `message`: message validation on JSON headers of every shape, plus the round trip of valid ones;
- `decode`: image decoding of damaged photos, wrong-type files and oversized headers;
- `websocket`: random frames sent over a real socket to a running daemon.

The same strategies and checks serve the CI tests (`tests/test_fuzz_*.py`, a few hundred cases)
and the long run (`python -m fuzz.run`, 10,000 and more per target); see fuzz/README.md.
"""
