"""`meter bench`: measures meter against its ceiling (the gRPC stack alone) and the old one-row
design, side by side in one run, from separate load-generator processes over real channels."""
