"""The Stripe webhook adapter: verifies, maps each event to one meter RPC, calls it over gRPC.

It is thin and stateless: it never touches the database. The service stores each verified event
in the same transaction as its effect, so the adapter can be retried, restarted and replicated.
"""
