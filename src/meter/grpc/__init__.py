"""The gRPC entry point: servicer (proto <-> use case), error mapping, server lifecycle."""
