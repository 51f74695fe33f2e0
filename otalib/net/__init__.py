"""Network plumbing between the parts of the lab.

:mod:`.address` (the one ``HOST:PORT`` parser), :mod:`.link` (a fault-injecting TCP proxy
between a board and the broker: bandwidth, latency, drops, cuts; named link profiles).
"""
