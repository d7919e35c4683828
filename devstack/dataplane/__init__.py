"""A local data plane for the embedded default: what runs "on" emulated EC2 instances.

moto's instances run nothing, so warm-up, probes and cutover benchmarks would have nothing to talk to. Two
processes fill the gap, on 127.0.0.1 only:

- `standin`: a tiny HTTP app per instance with a cache that starts cold (slow requests) and warms as keys are
  requested, fault injection, and CloudWatch metrics like a real service would publish;
- `agent`: the local "hypervisor": it watches the product's instances in moto's EC2 and runs one stand-in per
  running instance, publishing where each listens in a registry file (read by `shadowing/endpoints.py`).

Product code (activities, workflows) never imports this package; `devstack/stack.py` starts the agent as a process.
"""
