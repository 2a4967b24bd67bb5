"""Use cases: one async function per RPC, each one transaction on one account."""
