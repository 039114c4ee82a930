"""Several comfyart processes on one Redis (issue 24): which replica leads (``leadership``: a lease with a fencing
epoch), the leader's term that runs the loops that must be single (``terms``), and what the replicas know of each
other (``replicas``)."""
